// engine_shared_test.cpp: engines built on a model loaded once (load_model), including two engines
// running at the same time on the same model, whose greedy texts must equal those of an engine with
// the model to itself; and the PromptBuilder the frontends share.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <future>
#include <thread>

#include "engine/engine.h"
#include "model/model.h"
#include "testutil/fixtures.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace moe::engine {
namespace {

std::string default_model() { return moe::testing::source_dir() + "/models/stories260K-moe.gguf"; }

EngineConfig shared_config() {
  EngineConfig c;
  c.max_num_seqs = 4;
  c.max_model_len = 256;
  c.max_num_batched_tokens = 32;
  return c;
}

struct Outcome {
  std::vector<int32_t> ids;
  std::string text;
  FinishReason reason = FinishReason::Error;
};

std::future<Outcome> generate(Engine& e, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  auto state = std::make_shared<std::pair<Outcome, std::promise<Outcome>>>();
  auto fut = state->second.get_future();
  Request r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  Callbacks cb;
  cb.on_delta = [state](const Delta& d) {
    state->first.text += d.text;
    state->first.ids.insert(state->first.ids.end(), d.token_ids.begin(), d.token_ids.end());
  };
  cb.on_finish = [state](FinishReason why, const Usage&, const std::string&) {
    state->first.reason = why;
    state->second.set_value(state->first);
  };
  e.submit(std::move(r), std::move(cb));
  return fut;
}

TEST(SharedModel, TwoEnginesOnOneModelGiveTheTextsOfOneEngineAlone) {
  LoadOptions lo;
  lo.n_threads = 2;
  lo.max_batch_tokens = 32;
  const auto model = load_model(default_model(), lo);
  const char* prompts[] = {"Once upon a time", "The cat", "Lily wanted", "One day", "Tom and Sue", "A big dog"};
  std::vector<std::vector<int32_t>> ids;
  for (const char* p : prompts) ids.push_back(model->prompts->text_prompt(p));

  std::vector<Outcome> alone;
  {
    Engine e(model, shared_config());
    for (const auto& p : ids) alone.push_back(generate(e, p, 40).get());
  }
  for (const auto& a : alone) {
    EXPECT_EQ(a.reason, FinishReason::Length);
    EXPECT_EQ(a.ids.size(), 40u);
  }

  // Both engines at once, from two threads, with different batch budgets: every forward of one runs
  // between the other's (Model::forward is serialized); each keeps its own KV cache.
  EngineConfig other = shared_config();
  other.max_num_batched_tokens = 7;
  other.enable_prefix_caching = false;
  Engine e1(model, shared_config());
  Engine e2(model, other);
  EXPECT_EQ(&e1.model(), &e2.model());
  std::vector<std::future<Outcome>> f1, f2;
  std::thread t1([&] {
    for (const auto& p : ids) f1.push_back(generate(e1, p, 40));
  });
  std::thread t2([&] {
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) f2.push_back(generate(e2, *it, 40));
  });
  t1.join();
  t2.join();
  for (size_t i = 0; i < ids.size(); ++i) {
    Outcome a = f1[i].get(), b = f2[ids.size() - 1 - i].get();
    EXPECT_EQ(a.ids, alone[i].ids) << prompts[i];
    EXPECT_EQ(b.ids, alone[i].ids) << prompts[i];
    EXPECT_EQ(a.text, alone[i].text) << prompts[i];
    EXPECT_EQ(b.text, alone[i].text) << prompts[i];
  }
  // The convenience constructor loads its own copy and agrees too.
  EngineConfig own = shared_config();
  own.model_path = default_model();
  own.n_threads = 2;
  Engine e3(own);
  EXPECT_NE(&e3.model(), &e1.model());
  EXPECT_EQ(generate(e3, ids[0], 40).get().ids, alone[0].ids);
}

TEST(SharedModel, PromptBuilderAppliesTheTemplateBosAndEndOfTurnRules) {
  const auto model = load_model(default_model());
  const PromptBuilder& pb = *model->prompts;
  const auto& tok = *model->tokenizer;
  // Plain text: the model's BOS, then the text's ids.
  auto plain = pb.text_prompt("The cat");
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(plain, tok.encode("The cat", tok.add_bos()));
  // A conversation through ChatML (the fallback for this model, whose <|im_end|> is no single token).
  const nlohmann::ordered_json messages = {{{"role", "user"}, {"content", "Hi"}}};
  auto chat = pb.chat_prompt(messages);
  EXPECT_EQ(chat.front(), tok.bos_id());
  EXPECT_EQ(std::count(chat.begin(), chat.end(), tok.bos_id()), 1);
  EXPECT_NE(tok.decode(chat).find("<|im_start|>assistant"), std::string::npos) << tok.decode(chat);
  EXPECT_TRUE(pb.end_of_turn_ids().empty());
  // The engine answers with the same builder.
  Engine e(model, shared_config());
  EXPECT_EQ(&e.prompt_builder(), &pb);
  EXPECT_EQ(e.chat_prompt(messages), chat);
  // An override that is no template is named in the error.
  LoadOptions bad;
  bad.chat_template_override = "no-such-template";
  try {
    load_model(default_model(), bad);
    FAIL() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("no-such-template"), std::string::npos) << err.what();
  }
}

}  // namespace
}  // namespace moe::engine

// golden_test.cpp: every case of ../shared/golden/chat_templates.cases.jsonl (rendered by Jinja2 3.1's
// sandbox configured like HF apply_chat_template) must come out byte for byte, or fail with the same
// raise_exception message. Also checks that the built-in templates are the shipped texts.
//
// The reference renderer's strftime_now returned the fixed text "22 Nov 2026" whatever the format
// (Mistral Small asks for "%Y-%m-%d" and the golden shows "22 Nov 2026"), so the cases run with a
// strftime_now hook returning that text; the real strftime path is tested in interpreter_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "template/chat_template.h"
#include "testutil/fixtures.h"
#include "util/error.h"

namespace moe::tmpl {
namespace {

using ojson = nlohmann::ordered_json;

std::vector<ojson> load_cases() {
  std::ifstream in(moe::testing::fixture("golden/chat_templates.cases.jsonl"));
  std::vector<ojson> cases;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) cases.push_back(ojson::parse(line));
  return cases;
}

TEST(ChatTemplateGolden, EveryCaseRendersExactly) {
  MOE_REQUIRE_FIXTURE("golden/chat_templates.cases.jsonl");
  auto cases = load_cases();
  ASSERT_GE(cases.size(), 120u);
  std::map<std::string, std::unique_ptr<ChatTemplate>> templates;
  size_t passed = 0, errors_expected = 0;
  for (const auto& c : cases) {
    const std::string name = c.at("template").get<std::string>();
    SCOPED_TRACE(name + " / " + c.at("conversation").get<std::string>() +
                 " / add_generation_prompt=" + (c.at("add_generation_prompt").get<bool>() ? "true" : "false"));
    if (!templates.count(name))
      templates[name] = std::make_unique<ChatTemplate>(moe::testing::read_file(moe::testing::fixture("chat_templates/" + name)));
    RenderOptions opt;
    opt.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
    opt.bos_token = c.at("bos_token").get<std::string>();
    opt.eos_token = c.at("eos_token").get<std::string>();
    opt.tools = c.at("tools");
    opt.strftime_now = [](const std::string&) { return std::string("22 Nov 2026"); };
    if (c.contains("expected")) {
      std::string got;
      try {
        got = templates[name]->render(c.at("messages"), opt);
      } catch (const Error& e) {
        ADD_FAILURE() << "unexpected error: " << e.what();
        continue;
      }
      EXPECT_EQ(got, c.at("expected").get<std::string>());
      if (got == c.at("expected").get<std::string>()) ++passed;
    } else {
      ++errors_expected;
      try {
        std::string got = templates[name]->render(c.at("messages"), opt);
        ADD_FAILURE() << "expected error '" << c.at("error").get<std::string>() << "', got output:\n" << got;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), c.at("error").get<std::string>());
        if (std::string(e.what()) == c.at("error").get<std::string>()) ++passed;
      }
    }
  }
  std::cout << "[ golden   ] " << passed << " of " << cases.size() << " chat template cases match ("
            << errors_expected << " of them expected errors)\n";
  EXPECT_EQ(passed, cases.size());
}

TEST(ChatTemplateGolden, BuiltinsAreTheShippedTexts) {
  MOE_REQUIRE_FIXTURE("chat_templates/mistralai-Mixtral-8x7B-Instruct-v0.1.jinja");
  auto names = builtin_template_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "mixtral"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "chatml"), names.end());
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    auto text = builtin_template(name);
    auto file = builtin_template_source_file(name);
    ASSERT_TRUE(text && file);
    EXPECT_EQ(*text, moe::testing::read_file(moe::testing::fixture("chat_templates/" + *file)));
    EXPECT_NO_THROW(ChatTemplate{*text});
  }
  EXPECT_FALSE(builtin_template("no-such-template").has_value());
}

TEST(ChatTemplateGolden, BuiltinsRenderWithoutFixtures) {
  // The built-ins must work on a machine without ../shared: render a plain conversation with each.
  ojson messages = ojson::array({{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello"}},
                                 {{"role", "user"}, {"content", "Bye"}}});
  RenderOptions opt;
  opt.add_generation_prompt = true;
  opt.now_epoch_seconds = 1795305600;  // 2026-11-22
  for (const auto& name : builtin_template_names()) {
    SCOPED_TRACE(name);
    ChatTemplate t(*builtin_template(name));
    std::string out = t.render(messages, opt);
    EXPECT_NE(out.find("Bye"), std::string::npos) << out;
  }
  ChatTemplate mixtral(*builtin_template("mixtral"));
  EXPECT_EQ(mixtral.render(messages, opt), "<s> [INST] Hi [/INST] Hello</s> [INST] Bye [/INST]");
  ChatTemplate chatml(*builtin_template("chatml"));
  EXPECT_EQ(chatml.render(messages, opt),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
}

}  // namespace
}  // namespace moe::tmpl

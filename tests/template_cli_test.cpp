// template_cli_test.cpp: `moe template` end to end: the prompt comes out byte for byte (no added
// newline) from a .jinja file, from a GGUF's tokenizer.chat_template with the model's BOS/EOS texts,
// and from the built-in fallback (with a note on stderr) when a GGUF has no template; a template's
// raise_exception becomes exit status 1 with the message on stderr.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "template/chat_template.h"
#include "testutil/fixtures.h"

namespace moe::template_cli_test {
namespace {

using Result = ::moe::testing::CommandResult;
using Scratch = ::moe::testing::TempDir;

// Runs `moe template args...` without a shell.
Result run_template(const Scratch&, std::vector<std::string> args) {
  args.insert(args.begin(), "template");
  return ::moe::testing::run_moe_args(args);
}

const char* kMessages = R"([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Grüße 🤖"},
                            {"role": "assistant", "content": "Hallo!"},
                            {"role": "user", "content": "Und jetzt?"}])";

// A GGUF with tokenizer metadata only (no tensors), optionally with a chat template.
std::string write_model(const Scratch& s, const std::string& name, const std::string* chat_template) {
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.model", gguf::Value::string("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array({"<unk>", "<BOS>", "<EOS>", "a"}));
  w.set("tokenizer.ggml.bos_token_id", gguf::Value::uint32(1));
  w.set("tokenizer.ggml.eos_token_id", gguf::Value::uint32(2));
  if (chat_template) w.set("tokenizer.chat_template", gguf::Value::string(*chat_template));
  std::string path = s.file(name);
  w.write(path);
  return path;
}

TEST(TemplateCli, RendersAFileExactly) {
  Scratch s;
  std::string tmpl = s.write("mixtral.jinja", *tmpl::builtin_template("mixtral"));
  std::string msgs = s.write("messages.json", kMessages);
  Result r = run_template(s, {"--template", tmpl, "--messages", msgs});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<s> [INST] Be brief.\n\nGrüße 🤖 [/INST] Hallo!</s> [INST] Und jetzt? [/INST]");
  r = run_template(s, {"--template", tmpl, "--messages", msgs, "--bos-token", "[B]", "--eos-token", "[E]"});
  EXPECT_EQ(r.out, "[B] [INST] Be brief.\n\nGrüße 🤖 [/INST] Hallo![E] [INST] Und jetzt? [/INST]");
}

TEST(TemplateCli, UsesTheModelsTemplateAndTokens) {
  Scratch s;
  const std::string chat = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
                           "{% if add_generation_prompt %}<assistant>{% endif %}";
  std::string model = write_model(s, "with.gguf", &chat);
  std::string msgs = s.write("messages.json", R"([{"role": "user", "content": "hi"}])");
  Result r = run_template(s, {"--model", model, "--messages", msgs, "--add-generation-prompt"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<BOS><user>hi<EOS><assistant>");
  EXPECT_EQ(r.err, "");
}

TEST(TemplateCli, FallsBackToABuiltinWithANote) {
  Scratch s;
  std::string model = write_model(s, "without.gguf", nullptr);
  std::string msgs = s.write("messages.json", R"([{"role": "user", "content": "hi"}])");
  Result r = run_template(s, {"--model", model, "--messages", msgs, "--add-generation-prompt"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_NE(r.err.find("no tokenizer.chat_template"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("chatml"), std::string::npos) << r.err;
  r = run_template(s, {"--model", model, "--messages", msgs, "--chat-template", "mixtral"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<BOS> [INST] hi [/INST]");
}

TEST(TemplateCli, ToolsVariablesAndRequestBodies) {
  Scratch s;
  std::string tmpl = s.write("t.jinja", "{{ tools|tojson }}|{{ enable_thinking }}|{{ strftime_now('%Y-%m-%d') }}|"
                                         "{{ messages|length }}");
  std::string tools = s.write("tools.json", R"([{"type": "function", "function": {"name": "f"}}])");
  std::string body = s.write("body.json", R"({"model": "x", "messages": [{"role": "user", "content": "q"}]})");
  Result r = run_template(s, {"--template", tmpl, "--messages", body, "--tools", tools, "--var", "enable_thinking=false",
                              "--now", "1795305600"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, R"([{"type": "function", "function": {"name": "f"}}]|False|2026-11-22|1)");
}

TEST(TemplateCli, TemplateErrorsExitNonZero) {
  Scratch s;
  std::string msgs = s.write("bad.json", R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  Result r = run_template(s, {"--chat-template", "mixtral", "--messages", msgs});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("conversation roles must alternate user/assistant"), std::string::npos) << r.err;
  std::string broken = s.write("broken.jinja", "ok\n{% if x %}\n");
  r = run_template(s, {"--template", broken, "--messages", msgs});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("line"), std::string::npos) << r.err;
  r = run_template(s, {"--chat-template", "no-such", "--messages", msgs});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unknown built-in chat template"), std::string::npos) << r.err;
  r = run_template(s, {"--list-builtins"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("mixtral\n"), std::string::npos);
}


TEST(TemplateCli, HostileNestingIsRefusedNotCrashed) {
  // A chain of 100,000 `+` (and the same inside a branch that never runs) used to overflow the stack,
  // and so did a messages file 1,000,000 levels deep (in a copy made before the 256-level check).
  Scratch s;
  std::string chain = "1";
  for (int k = 0; k < 100000; ++k) chain += " + 1";
  std::string msgs = s.write("m.json", R"([{"role": "user", "content": "a"}])");
  for (const std::string& body : {"{{ " + chain + " }}", "{% if false %}{{ " + chain + " }}{% endif %}"}) {
    std::string tmpl = s.write("chain.jinja", body);
    Result r = run_template(s, {"--template", tmpl, "--messages", msgs});
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_NE(r.err.find("template nested too deeply (more than 100 levels)"), std::string::npos) << r.err;
    // The server and chat read the same template through --chat-template and refuse it at start.
    for (const char* sub : {"serve", "chat"}) {
      r = ::moe::testing::run_moe_args({sub, "--chat-template", tmpl});
      EXPECT_EQ(r.status, 1) << sub << ": " << r.err;
      EXPECT_NE(r.err.find("template nested too deeply"), std::string::npos) << sub << ": " << r.err;
    }
  }
  std::string deep = s.write("deep.json", std::string(1000000, '[') + std::string(1000000, ']'));
  Result r = run_template(s, {"--chat-template", "chatml", "--messages", deep});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("is nested too deeply: more than 256 levels"), std::string::npos) << r.err;
  std::string deep_obj = s.write("deep_obj.json", R"({"messages": [{"role": "user", "content": )" +
                                                      std::string(1000000, '[') + std::string(1000000, ']') + "}]}");
  r = run_template(s, {"--chat-template", "chatml", "--messages", deep_obj});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("nested too deeply"), std::string::npos) << r.err;
  r = run_template(s, {"--chat-template", "chatml", "--messages", msgs, "--var",
                       "x=" + std::string(60000, '[') + std::string(60000, ']')});  // under one argument's 128 KiB
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--var x is nested too deeply"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe::template_cli_test

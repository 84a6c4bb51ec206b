// fuzz_test.cpp: templates are user input (a GGUF's metadata, a --template file), so any text must parse
// and render to either output or a moe::Error: never a crash, a hang, or another exception type. Two
// generators: random token soup built from Jinja's own syntax, and byte-level mutations (deletes,
// duplicates, swaps, inserts of syntax fragments) of every built-in template, rendered with a
// conversation that exercises tools and tool calls. Deterministic seeds; the budget keeps it under a
// few seconds.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <random>

#include "template/chat_template.h"
#include "util/error.h"

namespace moe::tmpl {
namespace {

using ojson = nlohmann::ordered_json;

const char* const kFragments[] = {
    "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "+%}", "{%+", " ", "\n", "  ", "\t",
    "if", "elif", "else", "endif", "for", "in", "endfor", "set", "endset", "macro", "endmacro", "call",
    "endcall", "filter", "endfilter", "raw", "endraw", "with", "endwith", "break", "continue", "recursive",
    "not", "and", "or", "is", "defined", "none", "true", "loop", "namespace", "ns", "x", "messages",
    "message", "'a'", "\"b\"", "'\\u00e9'", "1", "0", "-1", "2.5", "1e400", "(", ")", "[", "]", "{", "}",
    ",", ":", ".", "|", "~", "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", ">=", "=", "tojson",
    "length", "join", "map", "selectattr", "items", "trim", "default", "range(", "raise_exception(",
    "loop(", "caller()", "[::-1]", "[1:]", ".role", "['content']", "é", "\xff", "\xc3", "\x00",
};

ojson sample_messages() {
  return ojson::parse(R"([
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "abc123def", "type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "abc123def", "content": "sunny"},
    {"role": "assistant", "content": "<think>r</think>It is sunny."},
    {"role": "user", "content": [{"type": "text", "text": "thanks"}]}
  ])");
}

// Renders `source`; returns false (after recording a failure) when anything but moe::Error escapes.
bool survives(const std::string& source, const ojson& messages, const RenderOptions& opt, const Limits& limits,
              int* rendered) {
  try {
    ChatTemplate t(source, limits);
    (void)t.render(messages, opt);
    ++*rendered;
  } catch (const Error&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << "non-moe exception " << e.what() << " for template:\n" << source;
    return false;
  }
  return true;
}

Limits fuzz_limits() {
  Limits l;
  l.max_loop_iterations = 20000;
  l.max_output_bytes = 1 << 20;
  l.max_work = 1 << 22;
  return l;
}

RenderOptions fuzz_options() {
  RenderOptions opt;
  opt.add_generation_prompt = true;
  opt.now_epoch_seconds = 1795305600;
  opt.tools = ojson::parse(R"([{"type": "function", "function": {"name": "get_weather", "description": "d",
      "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "c"}}}}}])");
  return opt;
}

TEST(TemplateFuzz, RandomTokenSoupNeverCrashes) {
  std::mt19937 rng(12345);
  const ojson messages = sample_messages();
  const RenderOptions opt = fuzz_options();
  const Limits limits = fuzz_limits();
  const size_t n_frag = sizeof(kFragments) / sizeof(kFragments[0]);
  int rendered = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int iter = 0; iter < 4000; ++iter) {
    std::string src;
    int len = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) src += kFragments[rng() % n_frag];
    if (!survives(src, messages, opt, limits, &rendered)) return;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ fuzz     ] token soup: 4000 templates, " << rendered << " rendered, " << secs << " s\n";
  EXPECT_GT(rendered, 100);  // the generator reaches the interpreter, not only the parser
}

TEST(TemplateFuzz, MutatedBuiltinTemplatesNeverCrash) {
  std::mt19937 rng(777);
  const ojson messages = sample_messages();
  const RenderOptions opt = fuzz_options();
  const Limits limits = fuzz_limits();
  const size_t n_frag = sizeof(kFragments) / sizeof(kFragments[0]);
  int rendered = 0, total = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& name : builtin_template_names()) {
    const std::string base = *builtin_template(name);
    for (int iter = 0; iter < 300; ++iter) {
      std::string src = base;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !src.empty(); ++e) {
        size_t a = rng() % src.size();
        size_t len = 1 + rng() % std::min<size_t>(40, src.size() - a);
        switch (rng() % 4) {
          case 0: src.erase(a, len); break;
          case 1: src.insert(a, src.substr(a, len)); break;
          case 2: src.insert(a, kFragments[rng() % n_frag]); break;
          default: {
            size_t b = rng() % src.size();
            std::swap(src[a], src[b]);
          }
        }
      }
      ++total;
      if (!survives(src, messages, opt, limits, &rendered)) return;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ fuzz     ] mutations: " << total << " templates, " << rendered << " rendered, " << secs << " s\n";
  EXPECT_GT(rendered, 100);  // enough mutants stay valid to exercise the interpreter
}

}  // namespace
}  // namespace moe::tmpl

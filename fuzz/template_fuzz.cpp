// template_fuzz.cpp: libFuzzer target for the Jinja chat-template interpreter: parse, then render.
// The input is a template, optionally followed by a NUL byte and a messages JSON (any JSON the
// json_limits bounds accept; otherwise a fixed two-turn conversation), so the fuzzer mutates both the
// program and the data it walks. Limits are small so that a loop or a quadratic pattern ends quickly;
// every failure must be a moe::Error (a template error), never a crash, a hang or a huge allocation.
// fuzz-link: moe_template moe_util
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "template/chat_template.h"
#include "util/error.h"
#include "util/json_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  std::string_view all(reinterpret_cast<const char*>(data), size);
  size_t nul = all.find('\0');
  std::string source(all.substr(0, nul));
  nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
      R"({"role":"assistant","content":"Hello!"},{"role":"user","content":[{"type":"text","text":"more"}]}])");
  if (nul != std::string_view::npos) {
    try {
      util::JsonLimits limits;
      limits.max_depth = 64;
      messages = util::parse_ordered_json_limited(all.substr(nul + 1), limits, "messages");
    } catch (const Error&) {
    }
  }
  tmpl::Limits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_loop_iterations = 1 << 12;
  limits.max_work = 1 << 20;
  try {
    tmpl::ChatTemplate t(source, limits);
    tmpl::RenderOptions opt;
    opt.now_epoch_seconds = 1795305600;
    opt.tools = nlohmann::ordered_json::parse(R"([{"type":"function","function":{"name":"f","parameters":{}}}])");
    (void)t.render(messages, opt);
    opt.add_generation_prompt = true;
    (void)t.render(messages, opt);
  } catch (const Error&) {
  }
  return 0;
}

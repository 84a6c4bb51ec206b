// batch_line_fuzz.cpp: libFuzzer target for `moe batch` input: the input is a JSONL file, scanned and
// classified as scan_input does (envelope, custom_id, url, depth and size bounds), and every line it
// accepts has its body parsed by the route's own request parser, as the batch runner does. A line may
// only ever be accepted, or refused with a reason; nothing may crash.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "batch/format.h"
#include "server/request.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  // scan_input maps a file: write the input to a per-process file in memory-backed /dev/shm when there.
  static const std::string path = [] {
    std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return dir + "/moe-batch-line-fuzz-" + std::to_string(getpid()) + ".jsonl";
  }();
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    batch::Input in = batch::scan_input(path);
    for (size_t k = 0; k < in.lines.size(); ++k) {
      const batch::LineInfo& l = in.lines[k];
      if (!l.valid) {
        if (l.error_code.empty() || l.error_message.empty()) __builtin_trap();  // a refusal names why
        continue;
      }
      auto line = nlohmann::json::parse(in.text(k));  // accepted lines are valid JSON by contract
      const auto& body = line.at("body");
      try {
        switch (l.endpoint) {
          case batch::Endpoint::Chat: (void)server::parse_chat_request(body); break;
          case batch::Endpoint::Completions: (void)server::parse_completion_request(body, 32000); break;
          case batch::Endpoint::Embeddings: (void)server::parse_embedding_request(body, 32000); break;
        }
      } catch (const server::ApiError&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}

// format.h: the OpenAI batch file formats, read and written without an engine.
//
// Input: one request per line, {"custom_id", "method": "POST", "url", "body"}, url one of
// /v1/chat/completions, /v1/completions, /v1/embeddings. scan_input() maps the file and classifies every
// non-blank line once: a line that is not a JSON object, lacks a field, names another url or repeats an
// earlier custom_id is marked invalid with a code and a message naming the line; only byte offsets and
// the custom_id are kept per line (a job of millions of lines holds no bodies in memory).
//
// Output: {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}, one per line.
// Every id is a pure function of (salt, the input's bytes, the line's index), and `created` is fixed per
// job, so re-runs, shards and MPI ranks write byte-identical lines: that is what lets a crashed job be
// finished by a different process and the parts of a split job be merged and compared.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/mapped_file.h"

namespace moe::batch {

enum class Endpoint { Chat, Completions, Embeddings };
std::optional<Endpoint> endpoint_from_url(std::string_view url);
const char* endpoint_url(Endpoint e);

// Longest input line accepted: the server's body limit plus room for the envelope.
inline constexpr size_t kMaxLineBytes = (size_t(8) << 20) + (size_t(64) << 10);
// Deepest nesting of arrays and objects in a line, checked on the raw text before it is parsed: the
// server's request code copies and walks bodies recursively, so a line 1,000,000 levels deep must not
// reach it. Real requests nest a handful of levels (a JSON schema in response_format a few dozen).
inline constexpr int kMaxLineDepth = 256;
// Longest custom_id accepted.
inline constexpr size_t kMaxCustomIdBytes = 512;

struct LineInfo {
  uint64_t offset = 0;      // byte range of the line in the input, newline excluded
  uint64_t length = 0;
  int64_t line_no = 0;      // 1-based line number in the file (blank lines count)
  bool valid = false;
  Endpoint endpoint = Endpoint::Chat;
  std::string custom_id;    // empty when the line has none
  std::string error_code;   // when !valid: invalid_json, missing_custom_id, invalid_url, ...
  std::string error_message;
};

struct Input {
  std::string path;
  MappedFile file;           // empty for an empty file
  uint64_t hash = 0;         // of every byte (see hash_bytes)
  std::vector<LineInfo> lines;  // the requests: non-blank lines, in file order; a line's index is its position here

  std::string_view text(size_t index) const;
  size_t n_valid() const;
};

// Reads and classifies `path`. Throws moe::Error when it cannot be read or has no request at all.
Input scan_input(const std::string& path);

// 64-bit hash of bytes (FNV-1a folded through a mixer): identifies an input for resume and seeds ids.
uint64_t hash_bytes(std::string_view bytes, uint64_t seed = 0);
// Deterministic hex ids: 32 hex digits from (salt, input hash, index, kind).
std::string derived_hex(std::string_view salt, uint64_t input_hash, int64_t index, std::string_view kind);

// The ids of one output line.
struct LineIds {
  std::string id;          // batch_req_<hex>
  std::string request_id;  // req_<hex>
  std::string body_id;     // chatcmpl-<hex> / cmpl-<hex> (unused for embeddings)
};
LineIds line_ids(std::string_view salt, uint64_t input_hash, int64_t index, Endpoint endpoint);

// An output line with a response (status 200 goes to the output file, others to the errors file).
std::string response_line(const LineIds& ids, const std::string& custom_id, int status, const std::string& body_json);
// An errors-file line for a request that never reached the model (bad JSON, bad url, duplicate id).
std::string line_error_line(const LineIds& ids, const LineInfo& line);

// Serialises without throwing on invalid UTF-8 (replaced by U+FFFD), as the server does.
std::string dump_compact(const nlohmann::json& j);

// CRC-32 (IEEE 802.3, reflected) of bytes: guards each journal record against torn writes.
uint32_t crc32(std::string_view bytes);

// "I/N" (0 <= I < N): this shard's index and the shard count.
struct Shard {
  int index = 0;
  int count = 1;
};
Shard parse_shard(const std::string& text);
// The contiguous range [begin, end) of request indices shard `s` owns out of `n`.
std::pair<int64_t, int64_t> shard_range(Shard s, int64_t n);

// OUTPUT.jsonl -> OUTPUT.errors.jsonl; anything else -> NAME.errors.jsonl.
std::string default_errors_path(const std::string& output);
// OUTPUT.jsonl -> OUTPUT.jsonl.moe-batch (the job's journal and manifest).
std::string default_state_dir(const std::string& output);

}  // namespace moe::batch

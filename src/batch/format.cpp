// format.cpp: see format.h.
#include "batch/format.h"

#include <sys/stat.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "util/error.h"
#include "util/json_limits.h"

namespace moe::batch {

using nlohmann::json;

std::optional<Endpoint> endpoint_from_url(std::string_view url) {
  if (url == "/v1/chat/completions") return Endpoint::Chat;
  if (url == "/v1/completions") return Endpoint::Completions;
  if (url == "/v1/embeddings") return Endpoint::Embeddings;
  return std::nullopt;
}

const char* endpoint_url(Endpoint e) {
  switch (e) {
    case Endpoint::Chat: return "/v1/chat/completions";
    case Endpoint::Completions: return "/v1/completions";
    case Endpoint::Embeddings: return "/v1/embeddings";
  }
  return "";
}

std::string_view Input::text(size_t index) const {
  const LineInfo& l = lines.at(index);
  return {reinterpret_cast<const char*>(file.data()) + l.offset, size_t(l.length)};
}

size_t Input::n_valid() const {
  size_t n = 0;
  for (const auto& l : lines) n += l.valid;
  return n;
}

namespace {

bool blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

void invalidate(LineInfo& l, const char* code, std::string message) {
  l.valid = false;
  l.error_code = code;
  l.error_message = cat("line ", l.line_no, ": ", message);
}

// Fills l.valid/endpoint/custom_id or the error from the line's JSON envelope.
void classify(LineInfo& l, std::string_view text) {
  if (text.size() > kMaxLineBytes) {
    invalidate(l, "line_too_long", cat("the line is ", text.size(), " bytes; the limit is ", kMaxLineBytes));
    return;
  }
  try {
    util::check_json_limits(text, {kMaxLineBytes, kMaxLineDepth}, "the line");
  } catch (const Error& e) {
    invalidate(l, "invalid_json", e.what());
    return;
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    invalidate(l, "invalid_json", "the line is not valid JSON");
    return;
  }
  if (!j.is_object()) {
    invalidate(l, "invalid_json", "the line is not a JSON object");
    return;
  }
  auto cid = j.find("custom_id");
  if (cid != j.end() && cid->is_string()) l.custom_id = cid->get<std::string>();
  if (cid == j.end() || !cid->is_string() || l.custom_id.empty()) {
    l.custom_id.clear();
    invalidate(l, "missing_custom_id", "'custom_id' must be a non-empty string");
    return;
  }
  if (l.custom_id.size() > kMaxCustomIdBytes) {
    l.custom_id.clear();
    invalidate(l, "invalid_custom_id", cat("'custom_id' is longer than ", kMaxCustomIdBytes, " bytes"));
    return;
  }
  auto method = j.find("method");
  if (method == j.end() || !method->is_string() || method->get<std::string>() != "POST") {
    invalidate(l, "invalid_method", "'method' must be \"POST\"");
    return;
  }
  auto url = j.find("url");
  std::optional<Endpoint> ep;
  if (url != j.end() && url->is_string()) ep = endpoint_from_url(url->get<std::string>());
  if (!ep) {
    invalidate(l, "invalid_url",
               "'url' must be one of /v1/chat/completions, /v1/completions, /v1/embeddings");
    return;
  }
  auto body = j.find("body");
  if (body == j.end() || !body->is_object()) {
    invalidate(l, "invalid_body", "'body' must be a JSON object");
    return;
  }
  l.endpoint = *ep;
  l.valid = true;
}

uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

Input scan_input(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot read the input ", path, ": no such file");
  if (!S_ISREG(st.st_mode)) fail("the input ", path, " is not a regular file");
  Input in;
  in.path = path;
  if (st.st_size > 0) in.file = MappedFile(path);
  std::string_view all(reinterpret_cast<const char*>(in.file.data()), in.file.size());
  in.hash = hash_bytes(all);
  std::unordered_map<std::string, int64_t> seen;  // custom_id -> first line number
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    size_t end = nl == std::string_view::npos ? all.size() : nl;
    ++line_no;
    std::string_view text = all.substr(pos, end - pos);
    if (!blank(text)) {
      LineInfo l;
      l.offset = pos;
      l.length = text.size();
      l.line_no = line_no;
      classify(l, text);
      if (l.valid) {
        auto [it, fresh] = seen.emplace(l.custom_id, line_no);
        if (!fresh) invalidate(l, "duplicate_custom_id", cat("custom_id '", l.custom_id, "' was already used on line ", it->second));
      }
      in.lines.push_back(std::move(l));
    }
    pos = end + 1;
  }
  if (in.lines.empty()) fail("the input ", path, " has no request lines");
  return in;
}

uint64_t hash_bytes(std::string_view bytes, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ mix64(seed);
  // Eight bytes per step: FNV-style multiply over words, then the tail byte by byte.
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < bytes.size(); ++i) h = (h ^ uint8_t(bytes[i])) * 0x100000001b3ull;
  return mix64(h ^ bytes.size());
}

std::string derived_hex(std::string_view salt, uint64_t input_hash, int64_t index, std::string_view kind) {
  uint64_t base = hash_bytes(salt, input_hash) ^ mix64(uint64_t(index) + 0x9e3779b97f4a7c15ull);
  uint64_t a = mix64(base ^ hash_bytes(kind, 1));
  uint64_t b = mix64(a ^ hash_bytes(kind, 2) ^ uint64_t(index));
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return buf;
}

LineIds line_ids(std::string_view salt, uint64_t input_hash, int64_t index, Endpoint endpoint) {
  LineIds ids;
  ids.id = "batch_req_" + derived_hex(salt, input_hash, index, "id");
  ids.request_id = "req_" + derived_hex(salt, input_hash, index, "request");
  const char* prefix = endpoint == Endpoint::Chat ? "chatcmpl-" : "cmpl-";
  ids.body_id = prefix + derived_hex(salt, input_hash, index, "body").substr(0, 24);
  return ids;
}

std::string dump_compact(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string response_line(const LineIds& ids, const std::string& custom_id, int status, const std::string& body_json) {
  // The body is already serialised (by the server's builders); splice it in rather than re-parse it.
  nlohmann::ordered_json head = nlohmann::ordered_json::object();
  head["id"] = ids.id;
  head["custom_id"] = custom_id;
  std::string out = head.dump(-1, ' ', false, json::error_handler_t::replace);
  out.pop_back();  // the closing brace
  out += ",\"response\":{\"status_code\":" + std::to_string(status) + ",\"request_id\":" +
         dump_compact(json(ids.request_id)) + ",\"body\":" + body_json + "},\"error\":null}";
  return out;
}

std::string line_error_line(const LineIds& ids, const LineInfo& line) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["id"] = ids.id;
  j["custom_id"] = line.custom_id.empty() ? json(nullptr) : json(line.custom_id);
  j["response"] = nullptr;
  j["error"] = {{"code", line.error_code}, {"message", line.error_message}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

uint32_t crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (char ch : bytes) c = table[(c ^ uint8_t(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

Shard parse_shard(const std::string& text) {
  size_t slash = text.find('/');
  auto number = [&](std::string_view s) -> int {
    if (s.empty() || s.size() > 6) fail("--shard: '", text, "' is not I/N (like 0/4)");
    int v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') fail("--shard: '", text, "' is not I/N (like 0/4)");
      v = v * 10 + (c - '0');
    }
    return v;
  };
  if (slash == std::string::npos) fail("--shard: '", text, "' is not I/N (like 0/4)");
  Shard s{number(std::string_view(text).substr(0, slash)), number(std::string_view(text).substr(slash + 1))};
  if (s.count < 1) fail("--shard: the shard count must be at least 1 (got '", text, "')");
  if (s.index >= s.count) fail("--shard: the index must be below the count: 0 <= I < ", s.count, " (got '", text, "')");
  return s;
}

std::pair<int64_t, int64_t> shard_range(Shard s, int64_t n) {
  auto at = [&](int64_t i) { return int64_t((__int128)n * i / s.count); };
  return {at(s.index), at(s.index + 1)};
}

std::string default_errors_path(const std::string& output) {
  constexpr std::string_view ext = ".jsonl";
  if (output.size() > ext.size() && output.ends_with(ext))
    return output.substr(0, output.size() - ext.size()) + ".errors.jsonl";
  return output + ".errors.jsonl";
}

std::string default_state_dir(const std::string& output) { return output + ".moe-batch"; }

}  // namespace moe::batch

// reader.cpp: the validating safetensors reader and sharded-checkpoint index (see safetensors.h for
// what is checked). The header is parsed by nlohmann::json after a bounded pre-scan of its nesting depth
// (the library's recursive-descent parser would otherwise recurse once per bracket of a hostile file).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "safetensors/safetensors.h"
#include "util/checked.h"

namespace {

// A SAX handler that only looks for a key given twice in one object (at any depth), linearly.
struct DuplicateKeyFinder : nlohmann::json_sax<nlohmann::json> {
  std::vector<std::set<std::string>> keys;  // the keys seen so far in each open object
  std::optional<std::string> duplicate;     // the first key given twice
  std::string error_text;                   // the parser's message, when the text is not JSON
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (!keys.empty() && !keys.back().insert(k).second && !duplicate) duplicate = k;
    return true;
  }
  bool end_object() override {
    if (!keys.empty()) keys.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) override {
    error_text = e.what();
    return false;
  }
};

}  // namespace

namespace moe::safetensors {

namespace {

struct DtypeInfo {
  Dtype dtype;
  const char* name;
  uint64_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},     {Dtype::I8, "I8", 1},     {Dtype::U16, "U16", 2},
    {Dtype::I16, "I16", 2},   {Dtype::F16, "F16", 2},   {Dtype::BF16, "BF16", 2}, {Dtype::U32, "U32", 4},
    {Dtype::I32, "I32", 4},   {Dtype::F32, "F32", 4},   {Dtype::U64, "U64", 8},   {Dtype::I64, "I64", 8},
    {Dtype::F64, "F64", 8},
};

std::string shown(std::string_view s) {
  // Names from a hostile file: shown bounded and with control bytes escaped.
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* dtype_name(Dtype d) {
  for (const auto& t : kDtypes)
    if (t.dtype == d) return t.name;
  return "?";
}
uint64_t dtype_size(Dtype d) {
  for (const auto& t : kDtypes)
    if (t.dtype == d) return t.size;
  return 0;
}
std::optional<Dtype> dtype_from_name(std::string_view name) {
  for (const auto& t : kDtypes)
    if (name == t.name) return t.dtype;
  return std::nullopt;
}

class HeaderParser {
 public:
  HeaderParser(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits)
      : bytes_(bytes), name_(name), limits_(limits) {}

  template <typename... Args>
  [[noreturn]] void error(Args&&... args) const {
    fail(name_, ": ", std::forward<Args>(args)...);
  }

  File run() {
    if (bytes_.size() < 8) error("truncated: the file has ", bytes_.size(), " bytes, a safetensors header length needs 8");
    const uint64_t n = read_u64_le(bytes_.data());
    if (n > limits_.max_header_bytes)
      error("header length ", n, " is over the limit of ", limits_.max_header_bytes, " bytes (not a safetensors file?)");
    if (n > bytes_.size() - 8) error("header length ", n, " runs past the end of the file (", bytes_.size(), " bytes)");
    if (n < 2) error("header length ", n, " is too short for a JSON object");
    const char* text = reinterpret_cast<const char*>(bytes_.data() + 8);
    if (text[0] != '{') error("header does not start with '{' (not a safetensors file?)");
    check_depth(std::string_view(text, n));

    // Duplicate keys at any depth: nlohmann would keep the last silently; the format has one entry each.
    // Found by a SAX pass that builds nothing, then a plain parse: nlohmann's parser callback (the
    // obvious way) is quadratic in an object's keys — 41.7 s against 58 ms for a 40,000-tensor header.
    DuplicateKeyFinder finder;
    if (!nlohmann::json::sax_parse(text, text + n, &finder, nlohmann::json::input_format_t::json, /*strict=*/true))
      error("header is not valid JSON: ", finder.error_text);
    const bool duplicate = finder.duplicate.has_value();
    const std::string duplicate_key = finder.duplicate.value_or("");
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + n);
    } catch (const nlohmann::json::exception& e) {
      error("header is not valid JSON: ", e.what());
    }
    if (duplicate) error("header has the key ", shown(duplicate_key), " twice");
    if (!header.is_object()) error("header is not a JSON object");

    File f;
    f.name_ = name_;
    f.bytes_ = bytes_;
    f.data_offset_ = 8 + n;
    const uint64_t data_size = bytes_.size() - f.data_offset_;
    auto metadata = std::make_shared<std::map<std::string, std::string>>();
    auto tensors = std::make_shared<std::vector<TensorInfo>>();
    if (header.size() > limits_.max_tensors) error("header has ", header.size(), " entries, over the limit of ", limits_.max_tensors);
    tensors->reserve(header.size());

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == "__metadata__") {
        if (!v.is_object()) error("__metadata__ is not a JSON object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) error("__metadata__ value of ", shown(m.key()), " is not a string");
          (*metadata)[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors->push_back(parse_tensor(key, v, data_size));
    }

    // The regions, sorted by begin, must tile [0, data_size): no overlap, no hole, no byte past the end.
    std::sort(tensors->begin(), tensors->end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t expect = 0;
    for (size_t i = 0; i < tensors->size(); ++i) {
      const TensorInfo& t = (*tensors)[i];
      if (t.begin < expect)
        error("tensor ", shown(t.name), " data [", t.begin, ", ", t.end, ") overlaps tensor ",
              shown((*tensors)[i - 1].name), " [", (*tensors)[i - 1].begin, ", ", expect, ")");
      if (t.begin > expect) error("tensor ", shown(t.name), " data starts at ", t.begin, ", leaving a hole after byte ", expect);
      expect = t.end;
    }
    if (expect != data_size)
      error("the tensors cover ", expect, " bytes of data but the file holds ", data_size, " after its header");
    auto by_name = std::make_shared<std::map<std::string, size_t>>();
    for (size_t i = 0; i < tensors->size(); ++i) {
      TensorInfo& t = (*tensors)[i];
      t.data = bytes_.data() + f.data_offset_ + t.begin;
      (*by_name)[t.name] = i;
    }
    f.tensors_ = std::move(tensors);
    f.by_name_ = std::move(by_name);
    f.metadata_ = std::move(metadata);
    return f;
  }

 private:
  // Nesting depth of {} and [] outside strings, before the recursive parser sees the text.
  void check_depth(std::string_view s) const {
    uint32_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        if (++depth > limits_.max_json_depth)
          error("header nests deeper than ", limits_.max_json_depth, " levels (at byte ", 8 + i, ")");
      } else if ((c == '}' || c == ']') && depth > 0) {
        --depth;
      }
    }
  }

  TensorInfo parse_tensor(const std::string& name, const nlohmann::json& v, uint64_t data_size) const {
    if (name.empty()) error("a tensor has an empty name");
    const std::string q = shown(name);
    if (!v.is_object()) error("tensor ", q, " is not a JSON object");
    for (auto it = v.begin(); it != v.end(); ++it)
      if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
        error("tensor ", q, " has the unknown field ", shown(it.key()));
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) error("tensor ", q, " has no string 'dtype'");
    auto d = dtype_from_name(dt->get_ref<const std::string&>());
    if (!d) error("tensor ", q, " has the unknown or unsupported dtype ", shown(dt->get_ref<const std::string&>()));
    t.dtype = *d;

    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) error("tensor ", q, " has no 'shape' array");
    if (sh->size() > limits_.max_rank) error("tensor ", q, " has ", sh->size(), " dims, over the limit of ", limits_.max_rank);
    uint64_t n = 1;
    for (size_t i = 0; i < sh->size(); ++i) {
      const nlohmann::json& e = (*sh)[i];
      if (!e.is_number_unsigned()) error("tensor ", q, ": shape[", i, "] is not a non-negative integer");
      const uint64_t dim = e.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX)) error("tensor ", q, ": shape[", i, "] = ", dim, " is too large");
      auto m = mul_u64(n, dim);
      if (!m) error("tensor ", q, ": the element count overflows 64 bits at shape[", i, "]");
      n = *m;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    t.n_elements = n;
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      error("tensor ", q, " has no 'data_offsets' pair of non-negative integers");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) error("tensor ", q, ": data_offsets [", t.begin, ", ", t.end, "] ends before it begins");
    if (t.end > data_size)
      error("tensor ", q, ": data_offsets end ", t.end, " is past the end of the data (", data_size, " bytes)");
    auto bytes = mul_u64(n, dtype_size(t.dtype));
    if (!bytes) error("tensor ", q, ": ", n, " elements of ", dtype_name(t.dtype), " overflow 64 bits");
    if (*bytes != t.end - t.begin)
      error("tensor ", q, ": ", n, " elements of ", dtype_name(t.dtype), " take ", *bytes, " bytes, but data_offsets span ",
            t.end - t.begin);
    return t;
  }

  std::span<const uint8_t> bytes_;
  const std::string& name_;
  const Limits& limits_;
};

File File::open(const std::string& path, const Limits& limits) {
  auto map = std::make_shared<const MappedFile>(path);
  File f = HeaderParser(map->bytes(), path, limits).run();
  f.map_ = std::move(map);
  return f;
}

File File::parse(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits) {
  return HeaderParser(bytes, name, limits).run();
}

const TensorInfo* File::find(std::string_view name) const {
  if (!by_name_) return nullptr;
  auto it = by_name_->find(std::string(name));
  return it == by_name_->end() ? nullptr : &(*tensors_)[it->second];
}

// --- Checkpoint ----------------------------------------------------------------------------------------

Checkpoint Checkpoint::open_file(const std::string& path, const Limits& limits) {
  Checkpoint c;
  c.shards_.push_back(File::open(path, limits));
  for (const TensorInfo& t : c.shards_.back().tensors()) c.by_name_[t.name] = &t;
  return c;
}

Checkpoint Checkpoint::open_dir(const std::string& dir, const Limits& limits) {
  namespace fs = std::filesystem;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (!fs::exists(index_path)) {
    if (!fs::exists(single)) fail(dir, ": has neither model.safetensors nor model.safetensors.index.json");
    return open_file(single.string(), limits);
  }
  const std::string ip = index_path.string();
  std::error_code ec;
  const auto size = fs::file_size(index_path, ec);
  if (ec) fail("cannot read ", ip, ": ", ec.message());
  if (size > limits.max_header_bytes) fail(ip, ": ", size, " bytes is over the limit of ", limits.max_header_bytes);
  std::ifstream in(index_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(ip, ": not valid JSON: ", e.what());
  }
  if (!index.is_object()) fail(ip, ": not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) fail(ip, ": has no 'weight_map' object");

  Checkpoint c;
  std::map<std::string, size_t> shard_of_file;
  std::vector<std::pair<std::string, std::string>> wanted;  // tensor, shard file
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) fail(ip, ": weight_map entry ", shown(it.key()), " is not a string");
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      fail(ip, ": weight_map names the shard ", shown(shard), ", which is not a plain file name in the directory");
    if (!shard_of_file.count(shard)) {
      shard_of_file[shard] = 0;
    }
    wanted.emplace_back(it.key(), shard);
  }
  c.shards_.reserve(shard_of_file.size());
  for (auto& [file, idx] : shard_of_file) {
    idx = c.shards_.size();
    c.shards_.push_back(File::open((fs::path(dir) / file).string(), limits));
  }
  for (const File& s : c.shards_)
    for (const TensorInfo& t : s.tensors())
      if (!c.by_name_.emplace(t.name, &t).second) fail(dir, ": tensor ", shown(t.name), " is in two shards");
  for (const auto& [tensor, shard] : wanted) {
    const File& s = c.shards_[shard_of_file[shard]];
    if (!s.find(tensor)) fail(ip, ": names tensor ", shown(tensor), " in ", shard, ", which does not hold it");
  }
  return c;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorInfo*> Checkpoint::tensors() const {
  std::vector<const TensorInfo*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const File& s : shards_) n += s.file_size();
  return n;
}

}  // namespace moe::safetensors

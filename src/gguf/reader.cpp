// reader.cpp: the validating GGUF reader.
//
// Every byte of the file is hostile. The parser is one forward pass with a cursor that can never move
// past the end: each count or length is checked against the bytes left (times the fewest bytes one
// element can take) and against Limits before anything is reserved or read, so a header claiming 2^60
// entries fails at once instead of allocating. Sizes go through overflow-checked arithmetic. Errors
// say "<file>: <where>: <what>", where <where> is the metadata key (with [i] array indices) or the
// tensor name being read, so a user can tell which field of which file is broken.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "gguf/gguf.h"
#include "util/checked.h"

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace moe::gguf {
namespace {

constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, n_tensors, n_kv
// Fewest bytes of one metadata entry: a non-empty key (u64 length + 1 byte), the value type, a 1-byte value.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
// Fewest bytes of one tensor info: non-empty name, n_dims, one ne, type, offset.
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;

// A name or key from the file, quoted for an error message: control bytes escaped, long ones cut, so a
// hostile name cannot flood or garble the terminal.
std::string quoted(std::string_view s) {
  constexpr size_t kMaxShown = 96;
  std::string out = "'";
  for (size_t k = 0; k < s.size() && k < kMaxShown; ++k) {
    unsigned char c = static_cast<unsigned char>(s[k]);
    if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += cat("...' (", s.size(), " bytes)");
  else out += "'";
  return out;
}

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// How many entries to reserve for a count read from the file. A count is only known to fit the file
// when each entry takes its fewest bytes, while one parsed entry can take 100 bytes of memory, so
// reserving the full count would let a small header ask for gigabytes before a single entry is read.
// Beyond this hint, vectors grow only as entries are actually parsed.
size_t reserve_hint(uint64_t count) { return static_cast<size_t>(std::min<uint64_t>(count, 4096)); }

}  // namespace

class Parser {
 public:
  Parser(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits)
      : bytes_(bytes), name_(name), limits_(limits) {}

  void parse_into(File& f) {
    f.name_ = name_;
    f.bytes_ = bytes_;
    auto parsed = std::make_shared<File::Parsed>();
    auto scaled = mul_u64(limits_.metadata_budget_per_file_byte, bytes_.size());
    auto budget = scaled ? add_u64(limits_.metadata_budget_base, *scaled) : std::nullopt;
    metadata_budget_ = budget ? *budget : UINT64_MAX;
    parse_header(f);
    parse_metadata(*parsed);
    resolve_alignment(f, *parsed);
    parse_tensor_infos(*parsed);
    place_tensor_data(f, *parsed);
    f.parsed_ = std::move(parsed);
  }

 private:
  // ---- errors ---------------------------------------------------------------------------------
  template <typename... Args>
  [[noreturn]] void error(Args&&... args) const {
    std::string where = context_;
    for (uint64_t index : path_) where += cat("[", index, "]");
    if (where.empty()) fail(name_, ": ", std::forward<Args>(args)...);
    fail(name_, ": ", where, ": ", std::forward<Args>(args)...);
  }

  // Counts `bytes` of memory against the metadata budget (Limits::metadata_budget_*), before they are
  // allocated; the error names the key (and array index) being read.
  void charge(uint64_t bytes, const char* what) {
    auto total = add_u64(metadata_bytes_, bytes);
    if (!total || *total > metadata_budget_)
      error(what, " would take the metadata past its memory budget of ", metadata_budget_, " bytes (",
            limits_.metadata_budget_base, " + ", limits_.metadata_budget_per_file_byte, " x the file's ",
            bytes_.size(), " bytes; ", metadata_bytes_, " already used, this needs ", bytes, ")");
    metadata_bytes_ = *total;
  }

  // ---- cursor ---------------------------------------------------------------------------------
  uint64_t left() const { return bytes_.size() - pos_; }

  const uint8_t* take(uint64_t n, const char* what) {
    if (n > left())
      error("truncated: the ", what, " needs ", n, " bytes at offset ", pos_, ", but the file ends at ",
            bytes_.size());
    const uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  uint8_t u8(const char* what) { return read<uint8_t>(what); }
  uint32_t u32(const char* what) { return read<uint32_t>(what); }
  uint64_t u64(const char* what) { return read<uint64_t>(what); }

  // A string: u64 length, then that many bytes (any bytes: UTF-8 is not enforced).
  std::string read_string(const char* what) {
    uint64_t len = u64(what);
    if (len > left())
      error(what, " length ", len, " runs past the end of the file (", left(), " bytes left at offset ", pos_, ")");
    if (len > limits_.max_string_bytes)
      error(what, " length ", len, " exceeds the limit of ", limits_.max_string_bytes, " bytes");
    charge(len, what);
    const uint8_t* p = take(len, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

  // ---- header -----------------------------------------------------------------------------------
  void parse_header(File& f) {
    if (bytes_.size() < 4) error("truncated header: the file has ", bytes_.size(), " bytes, a GGUF header needs ", kHeaderBytes);
    if (std::memcmp(bytes_.data(), "GGUF", 4) != 0) {
      error("not a GGUF file: magic is ", quoted(std::string_view(reinterpret_cast<const char*>(bytes_.data()), 4)),
            ", expected 'GGUF'");
    }
    if (bytes_.size() < kHeaderBytes)
      error("truncated header: the file has ", bytes_.size(), " bytes, a GGUF header needs ", kHeaderBytes);
    pos_ = 4;
    uint32_t version = u32("version");
    if (version == 1)
      error("GGUF version 1 is not supported (it used 32-bit counts and was replaced in 2023); "
            "convert the model again with a current converter");
    if (version == 0x02000000u || version == 0x03000000u)
      error("big-endian GGUF (version ", __builtin_bswap32(version), " stored big-endian) is not supported");
    if (version != 2 && version != 3) error("unsupported GGUF version ", version, " (this reader handles 2 and 3)");
    f.version_ = version;
    n_tensors_ = u64("n_tensors");
    n_kv_ = u64("n_kv");
    // Each entry takes at least a few bytes, so the counts are bounded by what follows the header. This
    // rejects absurd counts before any vector is sized by them.
    auto kv_min = mul_u64(n_kv_, kMinKvBytes);
    if (!kv_min || *kv_min > left())
      error("n_kv = ", n_kv_, " metadata entries need at least ", kMinKvBytes, " bytes each, but only ", left(),
            " bytes follow the header");
    uint64_t after_kv = left() - *kv_min;
    auto ti_min = mul_u64(n_tensors_, kMinTensorInfoBytes);
    if (!ti_min || *ti_min > after_kv)
      error("n_tensors = ", n_tensors_, " tensor infos need at least ", kMinTensorInfoBytes, " bytes each, but only ",
            after_kv, " bytes are left after the smallest possible ", n_kv_, " metadata entries");
  }

  // ---- metadata -----------------------------------------------------------------------------------
  void parse_metadata(File::Parsed& p) {
    p.kv.reserve(reserve_hint(n_kv_));
    for (uint64_t k = 0; k < n_kv_; ++k) {
      context_ = cat("metadata entry #", k);
      std::string key = read_string("key");
      if (key.empty()) error("empty key");
      context_ = "key " + quoted(key);
      charge(sizeof(std::pair<std::string, Value>), "the entry");
      ValueType type = read_value_type("value type");
      Value v = read_value(type, 0);
      p.kv.emplace_back(std::move(key), std::move(v));
    }
    context_.clear();
    p.kv_by_key = sorted_index(p.kv.size(), [&](size_t k) -> const std::string& { return p.kv[k].first; });
    for (size_t k = 1; k < p.kv_by_key.size(); ++k) {
      const std::string& a = p.kv[p.kv_by_key[k - 1]].first;
      if (a == p.kv[p.kv_by_key[k]].first) error("duplicate metadata key ", quoted(a));
    }
  }

  ValueType read_value_type(const char* what) {
    uint32_t id = u32(what);
    if (!is_known_value_type(id)) error("unknown ", what, " ", id, " (known types are 0..12)");
    return static_cast<ValueType>(id);
  }

  // `depth` is the number of arrays this value sits in.
  Value read_value(ValueType type, uint32_t depth) {
    Value v;
    v.type = type;
    switch (type) {
      case ValueType::UINT8: v.u = u8("UINT8 value"); break;
      case ValueType::INT8: v.i = static_cast<int8_t>(u8("INT8 value")); break;
      case ValueType::UINT16: v.u = read<uint16_t>("UINT16 value"); break;
      case ValueType::INT16: v.i = read<int16_t>("INT16 value"); break;
      case ValueType::UINT32: v.u = u32("UINT32 value"); break;
      case ValueType::INT32: v.i = read<int32_t>("INT32 value"); break;
      case ValueType::UINT64: v.u = u64("UINT64 value"); break;
      case ValueType::INT64: v.i = read<int64_t>("INT64 value"); break;
      case ValueType::FLOAT32: v.f = read<float>("FLOAT32 value"); break;
      case ValueType::FLOAT64: v.f = read<double>("FLOAT64 value"); break;
      case ValueType::BOOL: {
        uint8_t b = u8("BOOL value");
        if (b > 1) error("BOOL value ", static_cast<int>(b), " is neither 0 nor 1");
        v.b = b != 0;
        break;
      }
      case ValueType::STRING: v.s = read_string("string"); break;
      case ValueType::ARRAY: read_array(v, depth + 1); break;
    }
    return v;
  }

  // `depth` is this array's nesting level: 1 for an array that is not inside another.
  void read_array(Value& v, uint32_t depth) {
    if (depth > limits_.max_array_depth)
      error("arrays nested deeper than the limit of ", limits_.max_array_depth, " levels");
    v.array_type = read_value_type("array element type");
    if (v.array_type == ValueType::ARRAY && depth + 1 > limits_.max_array_depth)
      error("arrays nested deeper than the limit of ", limits_.max_array_depth, " levels");
    uint64_t count = u64("array count");
    uint64_t min_each = value_type_min_bytes(v.array_type);
    auto min_bytes = mul_u64(count, min_each);
    if (!min_bytes || *min_bytes > left())
      error("array count ", count, " of ", value_type_name(v.array_type), " needs at least ", min_each,
            " bytes per element, but only ", left(), " bytes are left at offset ", pos_);
    if (count > limits_.max_array_elements)
      error("array count ", count, " exceeds the limit of ", limits_.max_array_elements, " elements");
    // Every element becomes a Value: charged in full up front, so the array can be reserved exactly.
    auto value_bytes = mul_u64(count, sizeof(Value));
    charge(value_bytes ? *value_bytes : UINT64_MAX, "array");
    v.array.reserve(static_cast<size_t>(count));
    path_.push_back(0);
    for (uint64_t k = 0; k < count; ++k) {
      path_.back() = k;
      v.array.push_back(read_value(v.array_type, depth));
    }
    path_.pop_back();
  }

  void resolve_alignment(File& f, const File::Parsed& p) {
    f.alignment_ = kDefaultAlignment;
    const Value* a = nullptr;
    for (const auto& [key, value] : p.kv)
      if (key == "general.alignment") a = &value;
    if (!a) return;
    context_ = "key 'general.alignment'";
    if (!a->is_integer()) error("has type ", value_type_name(a->type), ", expected an integer");
    std::optional<int64_t> x = a->as_int();
    if (!x || *x <= 0)
      error("alignment ", is_signed_integer_type(a->type) ? cat(a->i) : cat(a->u), " is not a positive power of two");
    uint64_t align = static_cast<uint64_t>(*x);
    if (!is_power_of_two(align)) error("alignment ", align, " is not a power of two");
    if (align > limits_.max_alignment) error("alignment ", align, " exceeds the limit of ", limits_.max_alignment);
    f.alignment_ = align;
    context_.clear();
  }

  // ---- tensor infos ---------------------------------------------------------------------------------
  void parse_tensor_infos(File::Parsed& p) {
    p.tensors.reserve(reserve_hint(n_tensors_));
    for (uint64_t k = 0; k < n_tensors_; ++k) {
      context_ = cat("tensor #", k);
      TensorInfo t;
      t.name = read_string("name");
      if (t.name.empty()) error("empty tensor name");
      context_ = "tensor " + quoted(t.name);
      t.n_dims = u32("n_dims");
      if (t.n_dims < 1 || t.n_dims > kMaxDims) error("n_dims = ", t.n_dims, " is not between 1 and ", kMaxDims);
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        uint64_t ne = u64("ne");
        if (ne == 0) error("ne[", d, "] = 0: every dimension must be at least 1");
        if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          error("ne[", d, "] = ", ne, " is negative as a signed 64-bit count");
        t.ne[d] = static_cast<int64_t>(ne);
      }
      uint32_t type_id = u32("type");
      const TypeTraits* traits = type_traits_by_id(type_id);
      if (!traits) error("unknown tensor type id ", type_id);
      t.type = traits->type;
      t.offset = u64("offset");

      uint64_t n = 1;
      for (uint32_t d = 0; d < t.n_dims; ++d) {
        auto m = mul_u64(n, static_cast<uint64_t>(t.ne[d]));
        if (!m || *m > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          error("element count overflows (", shape(t), ")");
        n = *m;
      }
      t.n_elements = n;
      uint64_t ne0 = static_cast<uint64_t>(t.ne[0]);
      if (ne0 % static_cast<uint64_t>(traits->block_size) != 0)
        error("ne[0] = ", ne0, " is not a multiple of the ", traits->name, " block size ", traits->block_size);
      auto row = row_bytes(t.type, ne0);
      auto bytes = row ? mul_u64(*row, t.rows()) : std::nullopt;
      if (!bytes) error("byte size overflows 64 bits (", shape(t), " of ", traits->name, ")");
      t.n_bytes = *bytes;
      p.tensors.push_back(std::move(t));
    }
    context_.clear();
    p.tensor_by_name =
        sorted_index(p.tensors.size(), [&](size_t k) -> const std::string& { return p.tensors[k].name; });
    for (size_t k = 1; k < p.tensor_by_name.size(); ++k) {
      const std::string& a = p.tensors[p.tensor_by_name[k - 1]].name;
      if (a == p.tensors[p.tensor_by_name[k]].name) error("duplicate tensor name ", quoted(a));
    }
  }

  static std::string shape(const TensorInfo& t) {
    std::string s = "ne = {";
    for (uint32_t d = 0; d < t.n_dims; ++d) s += cat(d ? ", " : "", t.ne[d]);
    return s + "}";
  }

  void place_tensor_data(File& f, File::Parsed& p) {
    // pos_ <= file size < 2^63 and alignment <= Limits::max_alignment, so this cannot overflow; the
    // check is for a caller passing an absurd limit.
    auto data_offset = align_up(pos_, f.alignment_);
    if (!data_offset) error("data section offset overflows");
    f.data_offset_ = *data_offset;
    const uint64_t size = bytes_.size();
    for (TensorInfo& t : p.tensors) {
      context_ = "tensor " + quoted(t.name);
      if (t.offset % f.alignment_ != 0)
        error("offset ", t.offset, " is not a multiple of the alignment ", f.alignment_);
      auto start = add_u64(f.data_offset_, t.offset);
      auto end = start ? add_u64(*start, t.n_bytes) : std::nullopt;
      if (!end || *end > size)
        error("data at offset ", t.offset, " (", t.n_bytes, " bytes) runs past the end of the file: the data section starts at ",
              f.data_offset_, " and the file has ", size, " bytes");
      t.data = bytes_.data() + *start;
    }
    context_.clear();
    // No two tensors may share bytes: sorted by offset, each must end before the next begins.
    std::vector<size_t> by_offset(p.tensors.size());
    for (size_t k = 0; k < by_offset.size(); ++k) by_offset[k] = k;
    std::sort(by_offset.begin(), by_offset.end(),
              [&](size_t a, size_t b) { return p.tensors[a].offset < p.tensors[b].offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
      const TensorInfo& a = p.tensors[by_offset[k - 1]];
      const TensorInfo& b = p.tensors[by_offset[k]];
      if (a.offset + a.n_bytes > b.offset)  // both in the file, so no overflow
        error("tensors ", quoted(a.name), " [", a.offset, ", ", a.offset + a.n_bytes, ") and ", quoted(b.name), " [",
              b.offset, ", ", b.offset + b.n_bytes, ") overlap");
    }
  }

  template <typename NameOf>
  static std::vector<size_t> sorted_index(size_t n, NameOf name_of) {
    std::vector<size_t> idx(n);
    for (size_t k = 0; k < n; ++k) idx[k] = k;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return name_of(a) < name_of(b); });
    return idx;
  }

  std::span<const uint8_t> bytes_;
  const std::string& name_;
  const Limits& limits_;
  uint64_t metadata_budget_ = 0;  // bytes, from limits_ and the file size
  uint64_t metadata_bytes_ = 0;   // charged so far
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  std::string context_;         // the key or tensor being read, for error messages
  std::vector<uint64_t> path_;  // indices of the array elements being read, outermost first
};

// ---- File -------------------------------------------------------------------------------------------

File File::open(const std::string& path, const Limits& limits) {
  auto map = std::make_shared<MappedFile>(path);
  File f = parse(map->bytes(), path, limits);
  f.map_ = std::move(map);
  return f;
}

File File::parse(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits) {
  File f;
  Parser(bytes, name, limits).parse_into(f);
  return f;
}

std::shared_ptr<const File::Parsed> File::empty_parsed() {
  static const auto empty = std::make_shared<const Parsed>();
  return empty;
}

const Value* File::find(std::string_view key) const {
  const auto& kv = parsed_->kv;
  const auto& index = parsed_->kv_by_key;
  auto it = std::lower_bound(index.begin(), index.end(), key,
                             [&](size_t k, std::string_view x) { return kv[k].first < x; });
  if (it == index.end() || kv[*it].first != key) return nullptr;
  return &kv[*it].second;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  const auto& tensors = parsed_->tensors;
  const auto& index = parsed_->tensor_by_name;
  auto it = std::lower_bound(index.begin(), index.end(), name,
                             [&](size_t k, std::string_view x) { return tensors[k].name < x; });
  if (it == index.end() || tensors[*it].name != name) return nullptr;
  return &tensors[*it];
}

namespace {

[[noreturn]] void wrong_type(const File& f, std::string_view key, const Value& v, const char* expected) {
  if (v.type == ValueType::ARRAY)
    fail(f.name(), ": key ", quoted(key), " is an array of ", value_type_name(v.array_type), ", expected ", expected);
  fail(f.name(), ": key ", quoted(key), " has type ", value_type_name(v.type), ", expected ", expected);
}

const Value* find_array(const File& f, std::string_view key, const char* expected, bool (*element_ok)(ValueType)) {
  const Value* v = f.find(key);
  if (v && (v->type != ValueType::ARRAY || !element_ok(v->array_type))) wrong_type(f, key, *v, expected);
  return v;
}

}  // namespace

std::optional<int64_t> File::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) wrong_type(*this, key, *v, "an integer");
  auto x = v->as_int();
  if (!x) fail(name_, ": key ", quoted(key), " = ", v->u, " does not fit in a signed 64-bit integer");
  return x;
}

std::optional<uint64_t> File::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) wrong_type(*this, key, *v, "an unsigned integer");
  if (is_signed_integer_type(v->type)) {
    if (v->i < 0) fail(name_, ": key ", quoted(key), " = ", v->i, " is negative, expected an unsigned integer");
    return static_cast<uint64_t>(v->i);
  }
  return v->u;
}

std::optional<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_float()) wrong_type(*this, key, *v, "FLOAT32 or FLOAT64");
  return v->f;
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::BOOL) wrong_type(*this, key, *v, "BOOL");
  return v->b;
}

std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::STRING) wrong_type(*this, key, *v, "STRING");
  return v->s;
}

std::optional<std::vector<std::string>> File::get_string_array(std::string_view key) const {
  const Value* v = find_array(*this, key, "an array of STRING", [](ValueType t) { return t == ValueType::STRING; });
  if (!v) return std::nullopt;
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(e.s);
  return out;
}

std::optional<std::vector<float>> File::get_float_array(std::string_view key) const {
  const Value* v = find_array(*this, key, "an array of FLOAT32 or FLOAT64",
                              [](ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; });
  if (!v) return std::nullopt;
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(static_cast<float>(e.f));
  return out;
}

std::optional<std::vector<int64_t>> File::get_int_array(std::string_view key) const {
  const Value* v = find_array(*this, key, "an array of integers", is_integer_type);
  if (!v) return std::nullopt;
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (size_t k = 0; k < v->array.size(); ++k) {
    auto x = v->array[k].as_int();
    if (!x) fail(name_, ": key ", quoted(key), "[", k, "] = ", v->array[k].u, " does not fit in a signed 64-bit integer");
    out.push_back(*x);
  }
  return out;
}

}  // namespace moe::gguf

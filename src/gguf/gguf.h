// gguf.h: the validating GGUF reader (v2 and v3) and the writer.
//
// The reader treats every byte of the file as hostile. open()/parse() check, before any allocation or
// access that depends on them: counts against the bytes left in the file, string and array lengths,
// n_dims <= 4, element counts and byte sizes with overflow-checked arithmetic, rows divisible by the
// block size, data offset + size inside the file, alignment a power of two and bounded, duplicate keys
// and tensor names, unknown value and tensor types. A violation throws moe::Error whose message names
// the field ("tensor 'blk.0.attn_q.weight': ne[1] = ..."). Tensor data is never copied: TensorInfo::data
// points into the memory map. Also refused: GGUF v1 (32-bit counts), big-endian files, empty keys and
// tensor names, BOOL bytes other than 0/1, tensors whose data regions overlap. Strings may hold any
// bytes (UTF-8 is not enforced). Copies of a File share the map and the parsed metadata.
//
// Layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv × (string key,
// u32 value type, value), n_tensors × (string name, u32 n_dims, n_dims × u64 ne, u32 type, u64 offset),
// padding to `general.alignment` (default 32), tensor data (each offset relative to the data start and
// aligned). A string is u64 length + bytes. An array is u32 element type + u64 count + elements.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace moe::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);
bool is_known_value_type(uint32_t id);  // ids 0..12
bool is_integer_type(ValueType t);      // the eight integer types
bool is_signed_integer_type(ValueType t);
// Fewest bytes one value of type t occupies in a file (a string: its u64 length; an array: type + count).
// The reader bounds counts with it before allocating.
uint64_t value_type_min_bytes(ValueType t);

// One metadata value. Scalars: unsigned ints in `u`, signed in `i`, floats in `f`, bools in `b`,
// strings in `s`. Arrays: `array_type` and `array` (nested arrays are allowed by the format).
struct Value {
  ValueType type = ValueType::UINT8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  ValueType array_type = ValueType::UINT8;
  std::vector<Value> array;

  static Value uint8(uint8_t v), int8(int8_t v), uint16(uint16_t v), int16(int16_t v);
  static Value uint32(uint32_t v), int32(int32_t v), uint64(uint64_t v), int64(int64_t v);
  static Value float32(float v), float64(double v), boolean(bool v), string(std::string v);
  static Value array_of(ValueType element_type, std::vector<Value> elements);
  static Value string_array(const std::vector<std::string>& v);
  static Value float32_array(const std::vector<float>& v);
  static Value int32_array(const std::vector<int32_t>& v);

  bool is_integer() const;  // any of the eight integer types
  bool is_float() const;    // FLOAT32 or FLOAT64
  // The integer value whatever its width/signedness, nullopt if not an integer (or u64 > INT64_MAX).
  std::optional<int64_t> as_int() const;
};

struct TensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  std::array<int64_t, 4> ne{1, 1, 1, 1};  // ggml order: ne[0] is the contiguous (row) dimension
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;    // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the file's bytes
  uint64_t rows() const { return n_elements / static_cast<uint64_t>(ne[0]); }
};

// Upper bounds the reader enforces beyond "fits in the file".
struct Limits {
  uint64_t max_alignment = 1u << 20;       // general.alignment must be a power of two <= this
  uint64_t max_string_bytes = 1u << 26;    // one metadata string or name
  uint64_t max_array_elements = 1u << 26;  // one metadata array
  uint32_t max_array_depth = 4;            // nested arrays
  // Memory the parsed metadata may take, in total: metadata_budget_base + metadata_budget_per_file_byte
  // x the file's size. Each value costs sizeof(Value) (over 100 bytes, whatever its type) plus its
  // string's bytes, and arrays are charged in full before they are read, so a file of 60 M one-byte
  // array elements (6.7 GB as Values) is refused at once instead of allocated. Real files stay far
  // below: a 256k-token vocabulary (tokens, scores, types) takes about 90 MB, and a model file's size
  // is mostly tensors.
  uint64_t metadata_budget_base = uint64_t{64} << 20;
  uint64_t metadata_budget_per_file_byte = 8;
};

class File {
 public:
  // Maps and validates a file. Throws moe::Error naming the path and the bad field.
  static File open(const std::string& path, const Limits& limits = {});
  // Validates bytes that the caller keeps alive (tests, fuzzing). `name` prefixes error messages.
  static File parse(std::span<const uint8_t> bytes, const std::string& name = "<memory>", const Limits& limits = {});
  // A File over tensors whose bytes live elsewhere (a Hugging Face checkpoint's memory maps, buffers the
  // caller converted): the metadata and tensor infos as given (TensorInfo::data set, offsets ignored),
  // checked like a parsed file's (known types, 1-4 dims, n_elements/n_bytes consistent with ne, no
  // duplicate keys or names). `keepalive` owns the bytes; `source_bytes` is what file_size() reports.
  // Defined in assemble.cpp.
  static File assemble(std::string name, std::vector<std::pair<std::string, Value>> kv, std::vector<TensorInfo> tensors,
                       std::shared_ptr<const void> keepalive, uint64_t source_bytes);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Start of the tensor data section (the end of the tensor infos rounded up to the alignment). A file
  // without tensors may end before it.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return assembled_ ? source_bytes_ : bytes_.size(); }
  // True for a File made by assemble() (its tensors are not in one GGUF file).
  bool assembled() const { return assembled_; }
  // True when the tensor bytes are this File's own private read-only map of a file (open()): pages of
  // it may be dropped (madvise) and are read back from the file if touched again.
  bool memory_mapped() const { return map_ != nullptr; }
  const std::string& name() const { return name_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return parsed_->kv; }
  const Value* find(std::string_view key) const;

  // Typed getters: nullopt when the key is absent; moe::Error naming the key when it has the wrong type
  // (any integer type is accepted for get_int/get_uint if the value is in range; float for get_float
  // accepts FLOAT32/FLOAT64).
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Arrays; moe::Error if the key is not an array of the right element kind.
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<float>> get_float_array(std::string_view key) const;
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return parsed_->tensors; }
  const TensorInfo* find_tensor(std::string_view name) const;

 private:
  std::string name_;
  std::shared_ptr<MappedFile> map_;  // null when parsed from caller-owned bytes
  std::shared_ptr<const void> keepalive_;  // an assembled File's storage
  bool assembled_ = false;
  uint64_t source_bytes_ = 0;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  // What was parsed, immutable and shared, so that copying a File (a tokenizer vocabulary of 100k
  // strings, thousands of tensor infos) costs two reference counts.
  struct Parsed {
    std::vector<std::pair<std::string, Value>> kv;
    std::vector<TensorInfo> tensors;
    // Indices into kv / tensors sorted by key / name: find() and find_tensor() binary-search them, and
    // the parser finds duplicates as equal neighbours.
    std::vector<size_t> kv_by_key;
    std::vector<size_t> tensor_by_name;
  };
  static std::shared_ptr<const Parsed> empty_parsed();
  std::shared_ptr<const Parsed> parsed_ = empty_parsed();
  friend class Parser;
};

// Writes GGUF v3. Add metadata and tensor descriptions, then write(): the header goes out first and
// each tensor's bytes are asked for in order, so a multi-gigabyte model is produced tensor by tensor
// without holding it in memory.
class Writer {
 public:
  explicit Writer(uint64_t alignment = 32);
  void set(const std::string& key, Value value);  // replaces an existing key, keeps first position
  void remove(const std::string& key);
  // Declares a tensor; `ne` in ggml order (ne[0] contiguous). Returns its index.
  size_t add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne);
  // Declares a tensor and keeps a copy of its bytes (small models, tests).
  size_t add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne, std::vector<uint8_t> bytes);
  uint64_t tensor_bytes(size_t index) const;
  size_t tensor_count() const;

  // Produces the bytes of tensor `index` into `out` (sized tensor_bytes(index) by the writer).
  using Producer = std::function<void(size_t index, std::span<uint8_t> out)>;
  // Writes to `path` (through a temporary file renamed at the end, so a failure leaves no half file).
  // Tensors added with bytes need no producer.
  void write(const std::string& path, const Producer& producer = nullptr) const;
  // Whole file in memory (tests).
  std::vector<uint8_t> to_bytes(const Producer& producer = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes;
    uint64_t offset;
    std::vector<uint8_t> bytes;  // empty when produced on demand
    bool has_bytes;
  };
  void write_stream(const std::function<void(const void*, size_t)>& sink, const Producer& producer) const;
  void relayout();  // recomputes every offset after the alignment changed
  uint64_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace moe::gguf

// safetensors.h: the validating reader and the writer of Hugging Face `.safetensors` files, and sharded
// checkpoints (model.safetensors.index.json).
//
// Layout: u64 little-endian N, then N bytes of a UTF-8 JSON object (possibly padded with spaces), then
// the data buffer. Each JSON key is a tensor name mapping to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets relative to the data buffer); the optional key "__metadata__" maps to a string→string
// object. Tensor data is row-major (C order), little-endian.
//
// Like the GGUF reader, the reader treats every byte as hostile and checks, before any access that
// depends on it: N against the file size and a bound (100 MB, the reference implementation's limit), the
// JSON's nesting depth (scanned before parsing, so a deeply nested header cannot exhaust the stack) and
// syntax, duplicate keys, unknown or extra fields, known dtypes, shape rank and non-negative dims, the
// element count × dtype size with overflow-checked arithmetic against end − begin, begin <= end, and the
// regions: sorted by begin they must tile the data buffer exactly (no overlap, no hole, nothing past the
// end: the format's own rule). A violation throws moe::Error naming the file and the tensor or field.
// Tensor data is never copied: TensorInfo::data points into the memory map (safetensors does not align
// data, so consumers must not assume alignment).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"
#include "util/mapped_file.h"

namespace moe::safetensors {

// The dtypes of the format that this project reads (the 8-bit float types are refused as unknown).
enum class Dtype { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64 };
const char* dtype_name(Dtype d);        // "BF16", as the format spells it
uint64_t dtype_size(Dtype d);           // bytes per element
std::optional<Dtype> dtype_from_name(std::string_view name);

struct Limits {
  uint64_t max_header_bytes = 100u << 20;  // the JSON header (the reference reader's limit)
  uint32_t max_json_depth = 8;             // a valid header nests 3 deep ({name: {shape: [...]}})
  uint32_t max_rank = 8;                   // dims of one tensor
  uint64_t max_tensors = 1u << 20;
};

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;             // C order: shape.back() is the contiguous dimension
  uint64_t begin = 0, end = 0;            // data_offsets, relative to the data buffer
  uint64_t n_elements = 0;
  const uint8_t* data = nullptr;          // into the file's bytes (unaligned)
  uint64_t n_bytes() const { return end - begin; }
};

class File {
 public:
  // Maps and validates a file. Throws moe::Error naming the path and the bad field.
  static File open(const std::string& path, const Limits& limits = {});
  // Validates bytes the caller keeps alive (tests, fuzzing). `name` prefixes error messages.
  static File parse(std::span<const uint8_t> bytes, const std::string& name = "<memory>", const Limits& limits = {});

  const std::string& name() const { return name_; }
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t data_offset() const { return data_offset_; }  // 8 + N
  const std::vector<TensorInfo>& tensors() const { return *tensors_; }  // in data-offset order
  const TensorInfo* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return *metadata_; }
  // The map that owns the bytes (null when parsed from caller-owned bytes): keep it to keep data alive.
  const std::shared_ptr<const MappedFile>& map() const { return map_; }

 private:
  friend class HeaderParser;
  std::string name_;
  std::shared_ptr<const MappedFile> map_;
  std::span<const uint8_t> bytes_;
  uint64_t data_offset_ = 0;
  std::shared_ptr<const std::vector<TensorInfo>> tensors_;
  std::shared_ptr<const std::map<std::string, size_t>> by_name_;
  std::shared_ptr<const std::map<std::string, std::string>> metadata_;
};

// A checkpoint directory's tensors: `model.safetensors`, or the shards that
// `model.safetensors.index.json` names (its "weight_map": tensor name → shard file name). Shard names
// must be plain file names inside the directory; every tensor the index names must be in the shard it
// names, and no tensor may be in two shards.
class Checkpoint {
 public:
  static Checkpoint open_dir(const std::string& dir, const Limits& limits = {});
  // A single file (no index).
  static Checkpoint open_file(const std::string& path, const Limits& limits = {});

  const TensorInfo* find(std::string_view name) const;
  // Every tensor of every shard, sorted by name.
  std::vector<const TensorInfo*> tensors() const;
  const std::vector<File>& shards() const { return shards_; }
  uint64_t total_bytes() const;  // sum of the shards' file sizes

 private:
  std::vector<File> shards_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

// Writes a safetensors file: tensors in the order added, each right after the previous one, the header
// padded with spaces to a multiple of 8 bytes (as the reference writer does).
class Writer {
 public:
  void add(const std::string& name, Dtype dtype, const std::vector<int64_t>& shape, std::vector<uint8_t> bytes);
  void set_metadata(const std::string& key, const std::string& value);
  std::vector<uint8_t> to_bytes() const;
  void write(const std::string& path) const;  // through a temporary renamed at the end

 private:
  struct Pending {
    std::string name;
    Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe::safetensors

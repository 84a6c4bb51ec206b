// writer.cpp: the GGUF v3 writer.
//
// Everything is validated when it is added (names, shapes, block divisibility, value well-formedness),
// so write() cannot produce a file our own reader would reject. Offsets are a pure function of the
// tensor sizes and the alignment: each tensor starts at the previous end rounded up to the alignment,
// and every tensor (the last too) is followed by zero padding to the alignment, as llama.cpp lays files
// out, so files written here load there. write() streams through a temporary file in the target's
// folder and renames it at the end, so a crash or a failing producer never leaves a half-written model.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "gguf/gguf.h"
#include "util/error.h"
#include "util/checked.h"

namespace moe::gguf {
namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr const char* kAlignmentKey = "general.alignment";

bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

void check_alignment(uint64_t alignment) {
  if (!is_power_of_two(alignment) || alignment > Limits{}.max_alignment)
    fail("GGUF writer: alignment ", alignment, " is not a power of two between 1 and ", Limits{}.max_alignment);
}

// A value must serialise to something the reader accepts: array elements of the declared type, arrays
// nested no deeper than the reader's limit, strings and arrays within its limits.
void check_value(const std::string& key, const Value& v, uint32_t depth) {
  const Limits limits;
  if (v.type == ValueType::STRING && v.s.size() > limits.max_string_bytes)
    fail("GGUF writer: key '", key, "': string of ", v.s.size(), " bytes exceeds the limit of ", limits.max_string_bytes);
  if (v.type != ValueType::ARRAY) return;
  if (depth + 1 > limits.max_array_depth)
    fail("GGUF writer: key '", key, "': arrays nested deeper than ", limits.max_array_depth, " levels");
  if (v.array.size() > limits.max_array_elements)
    fail("GGUF writer: key '", key, "': array of ", v.array.size(), " elements exceeds the limit of ",
         limits.max_array_elements);
  if (v.array_type == ValueType::ARRAY && depth + 2 > limits.max_array_depth)
    fail("GGUF writer: key '", key, "': arrays nested deeper than ", limits.max_array_depth, " levels");
  for (size_t k = 0; k < v.array.size(); ++k) {
    if (v.array[k].type != v.array_type)
      fail("GGUF writer: key '", key, "': array element ", k, " has type ", value_type_name(v.array[k].type),
           ", expected ", value_type_name(v.array_type));
    check_value(key, v.array[k], depth + 1);
  }
}

// Serialises into a small buffer that is flushed to the sink in large pieces.
class Out {
 public:
  explicit Out(const std::function<void(const void*, size_t)>& sink) : sink_(sink) {}
  ~Out() = default;
  void bytes(const void* p, size_t n) {
    if (buf_.size() + n > kFlushAt) flush();
    if (n > kFlushAt) {
      sink_(p, n);
    } else {
      const uint8_t* b = static_cast<const uint8_t*>(p);
      buf_.insert(buf_.end(), b, b + n);
    }
    written_ += n;
  }
  template <typename T>
  void pod(T v) { bytes(&v, sizeof v); }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void zeros(uint64_t n) {
    static const uint8_t kZeros[256] = {};
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof kZeros));
      bytes(kZeros, k);
      n -= k;
    }
  }
  void flush() {
    if (!buf_.empty()) sink_(buf_.data(), buf_.size());
    buf_.clear();
  }
  uint64_t written() const { return written_; }

 private:
  static constexpr size_t kFlushAt = 1 << 20;
  const std::function<void(const void*, size_t)>& sink_;
  std::vector<uint8_t> buf_;
  uint64_t written_ = 0;
};

void write_value(Out& out, const Value& v) {
  switch (v.type) {
    case ValueType::UINT8: out.pod(static_cast<uint8_t>(v.u)); break;
    case ValueType::INT8: out.pod(static_cast<int8_t>(v.i)); break;
    case ValueType::UINT16: out.pod(static_cast<uint16_t>(v.u)); break;
    case ValueType::INT16: out.pod(static_cast<int16_t>(v.i)); break;
    case ValueType::UINT32: out.pod(static_cast<uint32_t>(v.u)); break;
    case ValueType::INT32: out.pod(static_cast<int32_t>(v.i)); break;
    case ValueType::UINT64: out.pod(static_cast<uint64_t>(v.u)); break;
    case ValueType::INT64: out.pod(static_cast<int64_t>(v.i)); break;
    case ValueType::FLOAT32: out.pod(static_cast<float>(v.f)); break;
    case ValueType::FLOAT64: out.pod(static_cast<double>(v.f)); break;
    case ValueType::BOOL: out.pod(static_cast<uint8_t>(v.b ? 1 : 0)); break;
    case ValueType::STRING: out.string(v.s); break;
    case ValueType::ARRAY:
      out.pod(static_cast<uint32_t>(v.array_type));
      out.pod(static_cast<uint64_t>(v.array.size()));
      for (const Value& e : v.array) write_value(out, e);
      break;
  }
}

}  // namespace

Writer::Writer(uint64_t alignment) : alignment_(alignment) {
  check_alignment(alignment);
  if (alignment != kDefaultAlignment) kv_.emplace_back(kAlignmentKey, Value::uint32(static_cast<uint32_t>(alignment)));
}

void Writer::set(const std::string& key, Value value) {
  if (key.empty()) fail("GGUF writer: empty metadata key");
  if (key.size() > Limits{}.max_string_bytes) fail("GGUF writer: metadata key of ", key.size(), " bytes is too long");
  check_value(key, value, 0);
  if (key == kAlignmentKey) {
    std::optional<int64_t> a = value.as_int();
    if (!a || *a <= 0) fail("GGUF writer: general.alignment must be a positive integer");
    check_alignment(static_cast<uint64_t>(*a));
    alignment_ = static_cast<uint64_t>(*a);
    relayout();
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  kv_.emplace_back(key, std::move(value));
}

void Writer::remove(const std::string& key) {
  for (auto it = kv_.begin(); it != kv_.end(); ++it) {
    if (it->first == key) {
      kv_.erase(it);
      break;
    }
  }
  if (key == kAlignmentKey && alignment_ != kDefaultAlignment) {
    alignment_ = kDefaultAlignment;
    relayout();
  }
}

void Writer::relayout() {
  uint64_t end = 0;
  for (PendingTensor& t : tensors_) {
    auto offset = align_up(end, alignment_);
    auto next = offset ? add_u64(*offset, t.n_bytes) : std::nullopt;
    if (!next) fail("GGUF writer: tensor '", t.name, "': data section size overflows");
    t.offset = *offset;
    end = *next;
  }
}

size_t Writer::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne) {
  if (name.empty()) fail("GGUF writer: empty tensor name");
  if (name.size() > Limits{}.max_string_bytes) fail("GGUF writer: tensor name of ", name.size(), " bytes is too long");
  for (const PendingTensor& t : tensors_)
    if (t.name == name) fail("GGUF writer: duplicate tensor name '", name, "'");
  const TypeTraits* traits = type_traits(type);
  if (!traits) fail("GGUF writer: tensor '", name, "': unknown type ", type_name(type));
  if (ne.empty() || ne.size() > 4) fail("GGUF writer: tensor '", name, "': n_dims = ", ne.size(), " is not between 1 and 4");
  uint64_t n = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] < 1) fail("GGUF writer: tensor '", name, "': ne[", d, "] = ", ne[d], " must be at least 1");
    auto m = mul_u64(n, static_cast<uint64_t>(ne[d]));
    if (!m || *m > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("GGUF writer: tensor '", name, "': element count overflows");
    n = *m;
  }
  uint64_t ne0 = static_cast<uint64_t>(ne[0]);
  if (ne0 % static_cast<uint64_t>(traits->block_size) != 0)
    fail("GGUF writer: tensor '", name, "': ne[0] = ", ne0, " is not a multiple of the ", traits->name, " block size ",
         traits->block_size);
  auto row = row_bytes(type, ne0);
  auto n_bytes = row ? mul_u64(*row, n / ne0) : std::nullopt;
  if (!n_bytes) fail("GGUF writer: tensor '", name, "': byte size overflows");
  uint64_t offset = 0;
  if (!tensors_.empty()) {
    const PendingTensor& last = tensors_.back();
    auto end = add_u64(last.offset, last.n_bytes);
    auto aligned = end ? align_up(*end, alignment_) : std::nullopt;
    if (!aligned || !add_u64(*aligned, *n_bytes)) fail("GGUF writer: tensor '", name, "': data section size overflows");
    offset = *aligned;
  }
  tensors_.push_back(PendingTensor{name, type, ne, *n_bytes, offset, {}, false});
  return tensors_.size() - 1;
}

size_t Writer::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                          std::vector<uint8_t> bytes) {
  size_t index = add_tensor(name, type, ne);
  PendingTensor& t = tensors_[index];
  if (bytes.size() != t.n_bytes) {
    uint64_t expected = t.n_bytes;
    tensors_.pop_back();
    fail("GGUF writer: tensor '", name, "': got ", bytes.size(), " bytes, its shape and type need ", expected);
  }
  t.bytes = std::move(bytes);
  t.has_bytes = true;
  return index;
}

uint64_t Writer::tensor_bytes(size_t index) const {
  if (index >= tensors_.size()) fail("GGUF writer: no tensor #", index, " (", tensors_.size(), " declared)");
  return tensors_[index].n_bytes;
}

size_t Writer::tensor_count() const { return tensors_.size(); }

void Writer::write_stream(const std::function<void(const void*, size_t)>& sink, const Producer& producer) const {
  for (const PendingTensor& t : tensors_)
    if (!t.has_bytes && !producer) fail("GGUF writer: tensor '", t.name, "' has no bytes and no producer was given");

  Out out(sink);
  out.bytes("GGUF", 4);
  out.pod<uint32_t>(3);
  out.pod<uint64_t>(tensors_.size());
  out.pod<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    out.string(key);
    out.pod(static_cast<uint32_t>(value.type));
    write_value(out, value);
  }
  for (const PendingTensor& t : tensors_) {
    out.string(t.name);
    out.pod(static_cast<uint32_t>(t.ne.size()));
    for (int64_t x : t.ne) out.pod(static_cast<uint64_t>(x));
    out.pod(static_cast<uint32_t>(t.type));
    out.pod(t.offset);
  }
  out.zeros(*align_up(out.written(), alignment_) - out.written());

  const uint64_t data_start = out.written();
  std::vector<uint8_t> scratch;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const PendingTensor& t = tensors_[k];
    out.zeros(data_start + t.offset - out.written());
    if (t.has_bytes) {
      out.bytes(t.bytes.data(), t.bytes.size());
    } else {
      if (t.n_bytes > std::numeric_limits<size_t>::max()) fail("GGUF writer: tensor '", t.name, "' is too large");
      scratch.assign(static_cast<size_t>(t.n_bytes), 0);
      producer(k, std::span<uint8_t>(scratch.data(), scratch.size()));
      out.bytes(scratch.data(), scratch.size());
    }
    out.zeros(*align_up(out.written(), alignment_) - out.written());
  }
  out.flush();
}

std::vector<uint8_t> Writer::to_bytes(const Producer& producer) const {
  std::vector<uint8_t> bytes;
  write_stream([&](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }, producer);
  return bytes;
}

void Writer::write(const std::string& path, const Producer& producer) const {
  const std::string tmp = cat(path, ".partial-", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create ", tmp, ": ", std::strerror(errno));
  try {
    write_stream([&](const void* p, size_t n) {
      const char* b = static_cast<const char*>(p);
      while (n > 0) {
        ssize_t w = ::write(fd, b, n);
        if (w < 0) {
          if (errno == EINTR) continue;
          fail("cannot write ", tmp, ": ", std::strerror(errno));
        }
        b += w;
        n -= static_cast<size_t>(w);
      }
    }, producer);
    if (::fsync(fd) != 0) fail("cannot sync ", tmp, ": ", std::strerror(errno));
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("cannot close ", tmp, ": ", std::strerror(errno));
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace moe::gguf

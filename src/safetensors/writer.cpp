// writer.cpp: the safetensors writer (tests build their own Hugging Face checkpoints with it). The
// header is compact JSON padded with spaces to a multiple of 8 bytes, as the reference writer pads it,
// so that the data buffer starts 8-aligned in the file.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "safetensors/safetensors.h"
#include "util/checked.h"

namespace moe::safetensors {

void Writer::add(const std::string& name, Dtype dtype, const std::vector<int64_t>& shape, std::vector<uint8_t> bytes) {
  if (name.empty() || name == "__metadata__") fail("safetensors writer: bad tensor name '", name, "'");
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("safetensors writer: tensor '", name, "' has a negative dim");
    n = checked_mul(n, static_cast<uint64_t>(d), "safetensors writer element count");
  }
  if (checked_mul(n, dtype_size(dtype), "safetensors writer bytes") != bytes.size())
    fail("safetensors writer: tensor '", name, "' has ", bytes.size(), " bytes for ", n, " elements of ", dtype_name(dtype));
  for (const Pending& p : tensors_)
    if (p.name == name) fail("safetensors writer: tensor '", name, "' added twice");
  tensors_.push_back({name, dtype, shape, std::move(bytes)});
}

void Writer::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

std::vector<uint8_t> Writer::to_bytes() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Pending& p : tensors_) {
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(p.dtype);
    e["shape"] = p.shape;
    e["data_offsets"] = {offset, offset + p.bytes.size()};
    header[p.name] = std::move(e);
    offset += p.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::vector<uint8_t> out(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* dst = out.data() + 8 + text.size();
  for (const Pending& p : tensors_) {
    if (!p.bytes.empty()) std::memcpy(dst, p.bytes.data(), p.bytes.size());
    dst += p.bytes.size();
  }
  return out;
}

void Writer::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = to_bytes();
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create ", tmp, ": ", std::strerror(errno));
  const uint8_t* b = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(fd, b, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("cannot write ", tmp, ": ", std::strerror(e));
    }
    b += w;
    left -= static_cast<size_t>(w);
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail("cannot close ", tmp, ": ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
  }
}

}  // namespace moe::safetensors

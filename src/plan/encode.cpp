// encode.cpp: threaded row encoding for quantize and synth (see encode.h).
#include "plan/encode.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "plan/progress.h"
#include "quant/quant.h"
#include "util/checked.h"
#include "util/error.h"

namespace moe::plan {

void encode_rows(ThreadPool& pool, GgmlType type, int64_t n, int64_t rows, std::span<uint8_t> out,
                 const std::function<void(int64_t row, float* buf)>& fill, Progress* progress) {
  auto rb = row_bytes(type, static_cast<uint64_t>(n));
  if (!rb) fail("rows of ", n, " elements do not fit ", type_name(type), " blocks");
  if (!quant::can_quantize(type)) fail("cannot write tensors of type ", type_name(type));
  const uint64_t row_b = *rb;
  if (checked_mul(row_b, static_cast<uint64_t>(rows), "tensor bytes") != out.size())
    fail("encode: output of ", out.size(), " bytes does not hold ", rows, " rows of ", row_b, " bytes");
  // Chunks of about 1M elements: large enough to amortise the hand-out, small enough to balance threads
  // and keep the progress bar moving on the largest expert tensors.
  const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(n, 1));
  const int64_t n_chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<std::vector<float>> scratch(static_cast<size_t>(pool.size()));
  pool.run(n_chunks, [&](int64_t chunk, int thread) {
    std::vector<float>& buf = scratch[static_cast<size_t>(thread)];
    buf.resize(static_cast<size_t>(n));
    const int64_t begin = chunk * rows_per_chunk, end = std::min(rows, begin + rows_per_chunk);
    for (int64_t r = begin; r < end; ++r) {
      fill(r, buf.data());
      quant::quantize_row(type, buf.data(), out.data() + static_cast<uint64_t>(r) * row_b, n);
    }
    if (progress) progress->advance(static_cast<uint64_t>(end - begin) * static_cast<uint64_t>(n));
  });
}

void convert_tensor(ThreadPool& pool, GgmlType src_type, const uint8_t* src, GgmlType dst_type, int64_t n,
                    int64_t rows, std::span<uint8_t> out, Progress* progress) {
  auto src_rb = row_bytes(src_type, static_cast<uint64_t>(n));
  if (!src_rb) fail("rows of ", n, " elements do not fit ", type_name(src_type), " blocks");
  if (src_type == dst_type) {
    if (checked_mul(*src_rb, static_cast<uint64_t>(rows), "tensor bytes") != out.size())
      fail("convert: size mismatch");
    std::memcpy(out.data(), src, out.size());
    if (progress) progress->advance(static_cast<uint64_t>(rows) * static_cast<uint64_t>(n));
    return;
  }
  if (!quant::is_supported(src_type)) fail("cannot read tensors of type ", type_name(src_type));
  const uint64_t src_row = *src_rb;
  encode_rows(pool, dst_type, n, rows, out, [&](int64_t r, float* buf) {
    quant::dequantize_row(src_type, src + static_cast<uint64_t>(r) * src_row, buf, n);
  }, progress);
}

}  // namespace moe::plan

// encode.h: writing tensors row by row into a block format, on all threads. `moe quantize` fills rows
// by dequantizing a source tensor, `moe synth` by drawing random numbers; both then quantize each row
// with quant::quantize_row straight into the writer's output buffer, so a tensor is never held as floats.
#pragma once
#include <cstdint>
#include <functional>
#include <span>

#include "gguf/ggml_types.h"
#include "util/thread_pool.h"

namespace moe::plan {

class Progress;

// Fills `out` (rows * row_bytes(type, n) bytes) with `rows` rows of n elements of `type`: fill(row, buf)
// writes row `row` as n floats into buf, then the row is encoded. Rows are handed to the pool's threads
// in chunks; `progress` (may be null) advances by n elements per row. fill must be thread-safe and a
// function of `row` only, so the result does not depend on the thread count.
void encode_rows(ThreadPool& pool, GgmlType type, int64_t n, int64_t rows, std::span<uint8_t> out,
                 const std::function<void(int64_t row, float* buf)>& fill, Progress* progress);

// Converts a tensor of `rows` rows of n elements from src_type (any type quant::dequantize_row reads)
// to dst_type; copies the bytes unchanged when the types are equal.
void convert_tensor(ThreadPool& pool, GgmlType src_type, const uint8_t* src, GgmlType dst_type, int64_t n,
                    int64_t rows, std::span<uint8_t> out, Progress* progress);

}  // namespace moe::plan

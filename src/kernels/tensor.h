// tensor.h: a read-only view of a weight tensor stored in GGUF block format, used in place from the
// memory map. Kernels take these views and know nothing of which model tensor they are; the model's
// Weights struct is a plain collection of them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"

namespace moe::kernels {

// A stack of `count` matrices of `rows` rows of `cols` values each (ggml ne0 = cols, ne1 = rows,
// ne2 = count). Rows are contiguous runs of blocks of `type`.
struct TensorView {
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;
  int64_t cols = 0;         // ne0: values per row (the reduction dimension of a matmul)
  int64_t rows = 0;         // ne1: output features
  int64_t count = 1;        // ne2: stacked matrices (experts), 1 otherwise
  size_t row_bytes = 0;     // bytes of one row
  size_t matrix_bytes = 0;  // rows * row_bytes
  bool repacked = false;    // rows in quant/lanes.h's repacked order (quant::repack_row; Q2_K/Q3_K/Q4_K/Q6_K/Q8_0, same
                            // row_bytes): only matmul reads them, through the repacked lane kernels

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
  // Matrix m of a stack as a view of its own.
  TensorView matrix(int64_t m) const {
    TensorView v = *this;
    v.data = data + static_cast<size_t>(m) * matrix_bytes;
    v.count = 1;
    return v;
  }
  // A 1-D F32 tensor (norm weights) as floats.
  const float* f32() const { return reinterpret_cast<const float*>(data); }
};

}  // namespace moe::kernels

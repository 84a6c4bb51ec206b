// repack.h: weights repacked at load into the layout the AVX-512 lane kernels read without permutes
// (quant/lanes.h, repack_row), held in host buffers the weights own.
//
// Why here: the GGUF bytes stay the file's format on disk and in every other backend; only the CPU
// matmuls of Q2_K, Q3_K, Q4_K, Q6_K and Q8_0 gain from the stored lane order (a round is a load and an AND instead of a
// permute per 64 weights: decode and small batches, where each row's unpacking is shared by few tokens,
// run 1.1-1.3x faster per kernel call; BENCHMARKS.md). The results are bit-identical either way.
//
// Memory: a repacked row has exactly the GGUF row's size, and the mapped pages it replaces are dropped
// (madvise MADV_DONTNEED on the private read-only map: the kernel forgets them, and re-reads them from
// the file if anything touches them again), so the process holds each weight byte once, as it did
// without repacking, and the memory plan (plan/memory.h) stays the file's size. Only a memory-mapped
// GGUF is repacked: where the bytes are the caller's or a converted checkpoint's, a copy could not
// replace them and would double the weights.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace moe::model {

struct RepackStats {
  int64_t matrices = 0;  // views repacked (an expert's matrix counts once)
  uint64_t bytes = 0;    // their bytes, now in host buffers instead of the map
  double seconds = 0;    // wall time of the repacking
  uint64_t declined_bytes = 0;  // repackable bytes left mapped because they did not fit max_bytes
};

// True when load would repack a view of this type on this CPU (quant::use_repacked).
bool repacks(const WeightView& v);

// Repacks every matrix of `w` that repacks() accepts (attention projections, experts, the output head
// unless it is the tied embedding, which is read by row) with n_threads threads; each becomes a view of
// its own 64-byte-aligned host buffer (Residency::HostBuffer, repacked = true). When `drop_mapped`,
// the pages of the map those views covered are dropped afterwards (the source must be a private
// read-only file map). Nothing is repacked when the matrices' bytes exceed `max_bytes`: copies are
// anonymous memory the OS cannot drop and re-read as it can mapped pages, so a model larger than the
// memory (served with its weights read from the file as needed) must stay mapped. With several
// repackable types that together exceed it, whole types are kept while they fit, Q4_K, Q2_K, then Q3_K
// (repack.cpp: a model never repacks less than before Q3_K was repackable). Throws moe::Error if a
// buffer cannot be allocated.
RepackStats repack_weights(Weights& w, int n_threads, bool drop_mapped, uint64_t max_bytes = UINT64_MAX);

}  // namespace moe::model

// repack.cpp: repack_weights (see repack.h). Views are handed to threads one at a time from a shared
// counter (a view is one matrix: 0.3-33 MB for Mixtral); each matrix's own pages are dropped as soon as it
// is copied, and the pages it shares with a neighbour once all are done (dropping those earlier would
// only make the neighbour's copy read them back from the file).
#include "model/repack.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "quant/lanes.h"
#include "util/error.h"

namespace moe::model {

bool repacks(const WeightView& v) {
  return v.data != nullptr && !v.repacked && v.residency != Residency::Device && v.count == 1 &&
         quant::use_repacked(v.type) && v.cols % 256 == 0 &&
         v.row_bytes == quant::repacked_row_bytes(v.type, v.cols);
}

namespace {

// Drops the mapped pages of [data, data + bytes): those wholly inside it, or (outward) every page it
// touches. Advice only: a failure costs memory, not correctness.
void drop_pages(const uint8_t* data, size_t bytes, bool outward) {
  if (bytes == 0) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<uintptr_t>(data), b = a + bytes;
  const uintptr_t begin = outward ? a / page * page : (a + page - 1) / page * page;
  const uintptr_t end = outward ? (b + page - 1) / page * page : b / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// A buffer for `bytes` of repacked weights, freed with std::free. Matrices of 2 MiB or more start on a
// 2 MiB boundary and the whole 2 MiB pages inside them are marked for transparent huge pages
// (MADV_HUGEPAGE; THP is commonly "madvise"-only): the kernels stream weights at ~13 GB/s per core, a
// 4 KiB page every ~300 ns, each new page a TLB miss and a page walk, which 2 MiB pages make 512 times
// rarer. Only pages the repacking fills are advised (the tail stays in 4 KiB pages), so the resident
// size stays the matrix's bytes, as the memory plan counts it. Where THP is off nothing changes.
void* alloc_weight_buffer(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t size = std::max<size_t>((bytes + 63) / 64 * 64, 64);
  void* p = nullptr;
  if (::posix_memalign(&p, bytes >= kHuge ? kHuge : 64, size) != 0) return nullptr;
  if (bytes >= kHuge) ::madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return p;
}

uint64_t view_bytes(const WeightView& v) { return static_cast<uint64_t>(v.rows) * v.row_bytes; }

// Over max_bytes, whole types are kept in the order they gained repacked kernels (Q4_K, Q2_K, then Q3_K;
// any other after them) while all their matrices fit what is left, and the rest dropped from `todo`: so
// a model that Q3_K pushes over the bound (llama.cpp's Q2_K mix of Mixtral 8x7B: 10.0 GB of Q2_K, 6.5 GB
// of Q3_K) still repacks what it did before Q3_K was repackable, never less. Returns the bytes dropped.
uint64_t keep_types_within(std::vector<WeightView*>& todo, uint64_t max_bytes) {
  uint64_t total = 0;
  for (const WeightView* v : todo) total += view_bytes(*v);
  if (total <= max_bytes) return 0;
  std::vector<GgmlType> order = {GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::Q3_K}, kept;
  for (const WeightView* v : todo)
    if (std::find(order.begin(), order.end(), v->type) == order.end()) order.push_back(v->type);
  uint64_t left = max_bytes, kept_bytes = 0;
  for (GgmlType t : order) {
    uint64_t bytes = 0;
    for (const WeightView* v : todo) bytes += v->type == t ? view_bytes(*v) : 0;
    if (bytes > left) continue;
    left -= bytes;
    kept_bytes += bytes;
    kept.push_back(t);
  }
  std::erase_if(todo, [&](const WeightView* v) { return std::find(kept.begin(), kept.end(), v->type) == kept.end(); });
  return total - kept_bytes;
}

}  // namespace

RepackStats repack_weights(Weights& w, int n_threads, bool drop_mapped, uint64_t max_bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<WeightView*> todo;
  for (LayerWeights& L : w.layers) {
    for (WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo})
      if (repacks(*v)) todo.push_back(v);
    for (auto* experts : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
      for (WeightView& v : *experts)
        if (repacks(v)) todo.push_back(&v);
  }
  if (!w.output_tied && repacks(w.output)) todo.push_back(&w.output);
  const uint64_t declined = keep_types_within(todo, max_bytes);
  if (todo.empty()) {
    RepackStats none;
    none.declined_bytes = declined;
    return none;
  }

  struct Source { const uint8_t* data; size_t bytes; };
  std::vector<Source> sources(todo.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i = next++; i < todo.size(); i = next++) {
      try {
        WeightView& v = *todo[i];
        const size_t bytes = static_cast<size_t>(v.rows) * v.row_bytes;
        auto* buf = static_cast<uint8_t*>(alloc_weight_buffer(bytes));
        if (buf == nullptr) fail("cannot allocate ", bytes, " bytes to repack a ", type_name(v.type), " matrix");
        std::shared_ptr<const void> owner(buf, [](const void* p) { std::free(const_cast<void*>(p)); });
        for (int64_t r = 0; r < v.rows; ++r) quant::repack_row(v.type, v.row(r), buf + static_cast<size_t>(r) * v.row_bytes, v.cols);
        sources[i] = {v.data, bytes};
        // The whole pages inside the range now: the copy then replaces them as it is made, so the
        // resident size never holds more than one matrix per thread twice.
        if (drop_mapped) drop_pages(v.data, bytes, /*outward=*/false);
        TensorView tv = v;
        tv.data = buf;
        tv.repacked = true;
        tv.matrix_bytes = bytes;
        v = WeightView(tv, Residency::HostBuffer, std::move(owner));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = todo.size();
      }
    }
  };
  const int threads = std::clamp<int>(n_threads, 1, static_cast<int>(std::max<size_t>(todo.size(), 1)));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);

  RepackStats st;
  st.matrices = static_cast<int64_t>(todo.size());
  st.declined_bytes = declined;
  for (const Source& s : sources) {
    st.bytes += s.bytes;
    // Then the pages the ranges share with their neighbours (read back from the file if still needed).
    if (drop_mapped) drop_pages(s.data, s.bytes, /*outward=*/true);
  }
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace moe::model

// assemble.cpp: File::assemble, a GGUF-shaped view of tensors held elsewhere. The model layer, the
// planner and `moe info` see a Hugging Face checkpoint through the same File interface as a GGUF file,
// so none of them needs a second code path; this checks what the parser would have checked.
#include <algorithm>

#include "gguf/gguf.h"
#include "util/checked.h"

namespace moe::gguf {

File File::assemble(std::string name, std::vector<std::pair<std::string, Value>> kv, std::vector<TensorInfo> tensors,
                    std::shared_ptr<const void> keepalive, uint64_t source_bytes) {
  File f;
  f.name_ = std::move(name);
  f.version_ = 3;
  f.keepalive_ = std::move(keepalive);
  f.assembled_ = true;
  f.source_bytes_ = source_bytes;
  auto p = std::make_shared<Parsed>();
  for (TensorInfo& t : tensors) {
    if (t.name.empty()) fail(f.name_, ": a tensor has an empty name");
    if (t.n_dims < 1 || t.n_dims > 4) fail(f.name_, ": tensor '", t.name, "' has ", t.n_dims, " dims");
    const TypeTraits* traits = type_traits(t.type);
    if (!traits) fail(f.name_, ": tensor '", t.name, "' has an unknown type");
    uint64_t n = 1;
    for (uint32_t d = 0; d < 4; ++d) {
      if (t.ne[d] < 1 || (d >= t.n_dims && t.ne[d] != 1)) fail(f.name_, ": tensor '", t.name, "' has a bad ne[", d, "]");
      n = checked_mul(n, static_cast<uint64_t>(t.ne[d]), "tensor element count");
    }
    const auto row = row_bytes(t.type, static_cast<uint64_t>(t.ne[0]));
    if (!row) fail(f.name_, ": tensor '", t.name, "': rows of ", t.ne[0], " do not fit ", traits->name, " blocks");
    const uint64_t bytes = checked_mul(*row, n / static_cast<uint64_t>(t.ne[0]), "tensor bytes");
    if (t.n_elements != n || t.n_bytes != bytes || (!t.data && bytes > 0))
      fail(f.name_, ": tensor '", t.name, "' has inconsistent sizes");
    t.offset = 0;
  }
  p->kv = std::move(kv);
  p->tensors = std::move(tensors);
  auto index = [](size_t n, auto name_of) {
    std::vector<size_t> idx(n);
    for (size_t k = 0; k < n; ++k) idx[k] = k;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return name_of(a) < name_of(b); });
    return idx;
  };
  p->kv_by_key = index(p->kv.size(), [&](size_t k) -> const std::string& { return p->kv[k].first; });
  for (size_t k = 1; k < p->kv_by_key.size(); ++k)
    if (p->kv[p->kv_by_key[k - 1]].first == p->kv[p->kv_by_key[k]].first)
      fail(f.name_, ": duplicate metadata key '", p->kv[p->kv_by_key[k]].first, "'");
  p->tensor_by_name = index(p->tensors.size(), [&](size_t k) -> const std::string& { return p->tensors[k].name; });
  for (size_t k = 1; k < p->tensor_by_name.size(); ++k)
    if (p->tensors[p->tensor_by_name[k - 1]].name == p->tensors[p->tensor_by_name[k]].name)
      fail(f.name_, ": duplicate tensor name '", p->tensors[p->tensor_by_name[k]].name, "'");
  f.parsed_ = std::move(p);
  return f;
}

}  // namespace moe::gguf

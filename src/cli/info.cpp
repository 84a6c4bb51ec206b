// info.cpp: `moe info MODEL`: what a GGUF model is: architecture and hyperparameters, how its tensors
// are stored (count and bytes per type), its parameter count and, for a mixture of experts, how many
// parameters and weight bytes one token actually uses (the figure decode speed depends on).
// `moe info --devices`: where the forward pass can run (--device): the CPU and each Vulkan device.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "cli/command.h"
#include "gguf/gguf.h"
#include "hf/hf.h"
#include "kv/kv_types.h"
#include "model/hparams.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/thread_pool.h"
#include "vulkan/context.h"

namespace moe::cli {
namespace {

struct InfoOpts {
  std::string model;
  bool devices = false;
};

std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, i == 0 ? "%.0f %s%s" : "%.2f %s%s", v, prefixes[i], unit);
  return buf;
}

// The --device choices: "cpu" always, then each Vulkan device with what moe uses of it.
int run_devices() {
  std::printf("cpu            %d physical cores\n", physical_core_count());
  std::string why;
  const std::vector<vk::DeviceInfo> devices = vk::list_devices(&why);
  if (devices.empty()) {
    std::printf("(no Vulkan device: %s)\n", why.c_str());
    return 0;
  }
  const int preferred = vk::preferred_device(devices);
  for (const vk::DeviceInfo& d : devices) {
    std::printf("vulkan:%-7d %s (%s%s)\n", d.index, d.name.c_str(), d.type.c_str(),
                d.index == preferred ? "; --device vulkan picks it" : "");
    std::printf("  memory:      %s device-local; one binding spans %s, one allocation %s\n",
                human(static_cast<double>(d.device_local_bytes), "B").c_str(),
                human(static_cast<double>(d.max_storage_buffer_range), "B").c_str(),
                human(static_cast<double>(d.max_allocation_bytes), "B").c_str());
    std::printf("  api:         Vulkan %u.%u.%u%s%s\n", d.api_version >> 22, (d.api_version >> 12) & 0x3ff,
                d.api_version & 0xfff, d.driver.empty() ? "" : ", driver ", d.driver.c_str());
    std::printf("  compute:     subgroup size %u%s, %u bytes of shared memory per workgroup\n", d.subgroup_size,
                d.subgroup_arithmetic ? " (arithmetic)" : "", d.max_shared_memory);
    std::printf("  features:    float16 %s, int8 %s, integer dot product %s, cooperative matrix %s\n",
                d.float16 ? "yes" : "no", d.int8 ? "yes" : "no", d.integer_dot_product ? "yes" : "no",
                d.cooperative_matrix ? "yes" : "no");
    std::string ext;
    for (const std::string& e : d.extensions_used) ext += (ext.empty() ? "" : ", ") + e;
    std::printf("  extensions:  %s\n", ext.empty() ? "(none beyond Vulkan 1.2)" : ext.c_str());
  }
  return 0;
}

int run_info(const InfoOpts& o) {
  if (o.devices) return run_devices();
  const std::string path = model_or_default(o.model);
  gguf::File f = hf::open_model_file(path);
  const model::HParams hp = model::HParams::from_gguf(f);
  const model::Weights w = model::Weights::from_gguf(f, hp);

  struct TypeStat {
    uint64_t count = 0, bytes = 0, params = 0;
  };
  std::map<std::string, TypeStat> by_type;
  uint64_t params = 0, bytes = 0;
  for (const auto& t : f.tensors()) {
    TypeStat& s = by_type[type_name(t.type)];
    ++s.count;
    s.bytes += t.n_bytes;
    s.params += t.n_elements;
    params += t.n_elements;
    bytes += t.n_bytes;
  }
  // Expert weights: a token uses n_expert_used of n_expert of them.
  uint64_t expert_params = 0, expert_bytes = 0;
  if (hp.is_moe())
    for (const auto& L : w.layers)
      for (const auto* group : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
        for (const auto& m : *group) {
          expert_params += static_cast<uint64_t>(m.rows * m.cols);
          expert_bytes += m.matrix_bytes;
        }
  const double used = hp.is_moe() ? static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert) : 1.0;
  const double active_params = static_cast<double>(params - expert_params) + used * static_cast<double>(expert_params);
  // Bytes streamed per decoded token: all weights but the embedding table (one row is read) and the
  // unused experts.
  const uint64_t embd_bytes = w.output_tied ? 0 : w.token_embd.matrix_bytes;
  const double active_bytes = static_cast<double>(bytes - expert_bytes - embd_bytes) + used * static_cast<double>(expert_bytes);

  auto name = f.get_string("general.name");
  std::printf("model:          %s%s\n", path.c_str(), name ? (" (" + *name + ")").c_str() : "");
  if (f.assembled())
    std::printf("format:         Hugging Face checkpoint, %s bytes (safetensors maps + load-time F32 copies), %zu tensors%s\n",
                human(static_cast<double>(f.file_size()), "").c_str(), f.tensors().size(),
                hp.rope_rotate_half ? "; Q/K rows in HF order, rotate-half RoPE" : "");
  else
    std::printf("format:         GGUF v%u, %zu tensors, %zu metadata keys\n", f.version(), f.tensors().size(),
                f.metadata().size());
  if (hp.is_moe())
    std::printf("architecture:   %s, mixture of experts: %lld experts, %lld used per token (%s tensors)\n",
                hp.arch.c_str(), (long long)hp.n_expert, (long long)hp.n_expert_used,
                model::expert_layout_name(w.expert_layout));
  else
    std::printf("architecture:   %s, dense\n", hp.arch.c_str());
  std::printf("vocabulary:     %lld\n", (long long)hp.n_vocab);
  std::printf("context:        %lld (training)\n", (long long)hp.n_ctx_train);
  std::printf("layers:         %lld\n", (long long)hp.n_layer);
  std::printf("embedding:      %lld\n", (long long)hp.n_embd);
  std::printf("feed-forward:   %lld%s\n", (long long)hp.n_ff, hp.is_moe() ? " per expert" : "");
  std::printf("attention:      %lld query heads, %lld KV heads, head size %lld\n", (long long)hp.n_head,
              (long long)hp.n_head_kv, (long long)hp.head_dim);
  std::printf("rope:           %lld dims, base %g\n", (long long)hp.n_rot, hp.rope_freq_base);
  std::printf("rms norm eps:   %g\n", hp.rms_norm_eps);
  std::printf("output head:    %s\n", w.output_tied ? "tied to the token embedding" : "own tensor");
  std::printf("tensor types:\n");
  for (const auto& [t, s] : by_type)
    std::printf("  %-6s %5llu tensors  %12llu bytes  %s params\n", t.c_str(), (unsigned long long)s.count,
                (unsigned long long)s.bytes, human(static_cast<double>(s.params), "").c_str());
  std::printf("parameters:     %llu (%s)\n", (unsigned long long)params, human(static_cast<double>(params), "").c_str());
  if (hp.is_moe())
    std::printf("active/token:   %.0f (%s), of which experts %s\n", active_params, human(active_params, "").c_str(),
                human(used * static_cast<double>(expert_params), "").c_str());
  std::printf("weight bytes:   %llu (%s)\n", (unsigned long long)bytes, human(static_cast<double>(bytes), "B").c_str());
  std::printf("bytes/token:    %.0f (%s) of weights read per decoded token\n", active_bytes,
              human(active_bytes, "B").c_str());
  std::printf("KV per token:   %llu bytes (f16), %llu bytes (f32)\n",
              (unsigned long long)kv::kv_bytes_per_token(kv::KvType::F16, hp.n_layer, hp.n_head_kv, hp.head_dim),
              (unsigned long long)kv::kv_bytes_per_token(kv::KvType::F32, hp.n_layer, hp.n_head_kv, hp.head_dim));
  return 0;
}

const Registrar reg("info", "Print a model's architecture, hyperparameters and tensor statistics", [](CLI::App& sub) {
  auto o = std::make_shared<InfoOpts>();
  sub.add_option("model", o->model, "GGUF model file (default: the bundled model)");
  sub.add_flag("--devices", o->devices, "list where the forward pass can run (--device): the CPU and each Vulkan device");
  return [o] { return run_info(*o); };
});

}  // namespace
}  // namespace moe::cli

// plan.cpp: `moe plan`: will it fit? The memory a model needs (weights, KV cache, workspace, runtime
// overhead) for a context, a number of sequences and a KV type, checked against a budget (a size, a
// named GPU, or by default this machine's RAM), computed with the allocator's own sizing functions
// (src/plan/memory.h). A preset without --type prints one table over every quantization type.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cli/command.h"
#include "gguf/gguf.h"
#include "hf/hf.h"
#include "model/hparams.h"
#include "model/vulkan_backend.h"
#include "plan/device_plan.h"
#include "plan/geometry.h"
#include "plan/kv_pool.h"
#include "plan/layout.h"
#include "plan/memory.h"
#include "plan/quant_mix.h"
#include "util/available_memory.h"
#include "util/error.h"
#include "util/thread_pool.h"
#include "vulkan/context.h"

namespace moe::cli {
namespace {

struct PlanOpts {
  std::string model;
  std::string preset;
  int64_t layers = 0;
  std::string type;
  int64_t ctx = -1;
  int64_t seqs = 1;
  std::string kv_type = "f16";
  std::string memory;
  std::string device;
  std::string gpu_memory;  // with --device vulkan[:N]: the device budget (default: its memory less a reserve)
  int64_t batch = 512;
  int threads = 0;
  std::string runtime_bytes;  // overrides the measured runtime base
  bool json = false;
  bool serve = false;          // plan the KV pool `moe serve` would size (plan/kv_pool.h)
  bool seqs_given = false;
  double utilization = 0.9;
};

// What is being planned: a geometry, the metadata the runtime will parse, and the tensor layout.
struct Subject {
  std::string label;   // "mixtral-8x7b (preset)" or the file path
  std::string type;    // the mix name, or what the file says it is
  model::HParams hp;
  plan::Metadata metadata;
  plan::WeightsLayout weights;
  uint64_t copied_bytes = 0;  // of file_bytes: load-time F32 copies (an HF view's AWQ expansions), not mapped
};

struct Budget {
  uint64_t bytes = 0;
  std::string label;
  bool explicit_budget = false;
};

std::string gb(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(b) / 1e9);
  return buf;
}

std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

// 46.70B, 85.7M, 3.8M: parameter counts as model cards write them.
std::string count_text(uint64_t n) {
  char buf[32];
  const double d = static_cast<double>(n);
  if (d >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", d / 1e9);
  else if (d >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", d / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1fK", d / 1e3);
  return buf;
}

std::string params_text(const model::HParams& hp) {
  std::string s = count_text(plan::parameter_count(hp)) + " params";
  if (hp.is_moe()) s += " (" + count_text(plan::active_parameter_count(hp)) + " active per token)";
  return s;
}

std::string file_type_text(const gguf::File& f) {
  auto ft = f.get_uint("general.file_type");
  if (!ft) return "as stored";
  const plan::QuantMix* m = plan::mix_for_file_type(*ft);
  return m ? m->name : cat("file type ", *ft);
}

bool vulkan_device(const PlanOpts& o) { return o.device == "vulkan" || o.device.rfind("vulkan:", 0) == 0; }

Budget resolve_budget(const PlanOpts& o) {
  if (vulkan_device(o)) return {plan::host_memory_bytes(), "this machine's RAM", false};  // the host side
  if (!o.memory.empty() && !o.device.empty()) fail("give --memory or --device, not both");
  if (!o.memory.empty()) return {plan::parse_size(o.memory), o.memory, true};
  if (!o.device.empty()) {
    plan::Device d = plan::find_device(o.device);
    return {d.bytes, cat(d.name, ": ", d.description), true};
  }
  return {plan::host_memory_bytes(), "this machine's RAM", false};
}

// The subject for one mix (or, with mix == nullptr, a file as it is).
Subject subject_for(const PlanOpts& o, const gguf::File* file, const model::HParams& hp, const plan::QuantMix* mix) {
  Subject s;
  s.hp = hp;
  if (file) {
    s.label = file->name();
    if (mix) {
      s.type = mix->name;
      s.metadata = plan::quantized_metadata(*file, *mix);
      s.weights = plan::layout_of_quantized_file(*file, hp, *mix);
    } else {
      s.type = file_type_text(*file);
      s.metadata = file->metadata();
      s.weights = plan::layout_of_file(*file);
      s.copied_bytes = file->get_uint(hf::kLoadCopyBytesKey).value_or(0);
    }
  } else {
    // Exactly what `moe synth --shape <preset> --type <mix>` writes (same name, synthetic vocabulary).
    const std::string& name = plan::find_preset(o.preset).name;
    const plan::Vocab vocab = plan::synthetic_vocab(hp.n_vocab);
    s.label = cat(name, o.layers ? cat(" (", hp.n_layer, " layers)") : std::string(), " (preset)");
    s.type = mix->name;
    s.metadata = plan::synth_metadata(hp, *mix, name, vocab);
    s.weights = plan::layout_of_synth(hp, *mix, vocab, name);
  }
  return s;
}

plan::MemoryOptions memory_options(const PlanOpts& o, kv::KvType kv_type, uint64_t process_base, int64_t ctx) {
  plan::MemoryOptions m;
  m.ctx = ctx;
  m.seqs = o.seqs;
  m.kv_type = kv_type;
  m.batch_tokens = o.batch;
  m.n_threads = o.threads > 0 ? o.threads : physical_core_count();
  m.process_base_bytes = process_base;
  return m;
}

nlohmann::json plan_json(const Subject& s, const plan::MemoryPlan& p, const plan::MemoryOptions& mo,
                         const Budget& b, const plan::Fit& f) {
  nlohmann::json j;
  j["model"] = s.label;
  j["type"] = s.type;
  j["n_vocab"] = s.hp.n_vocab;
  j["n_layer"] = s.hp.n_layer;
  j["n_embd"] = s.hp.n_embd;
  j["n_expert"] = s.hp.n_expert;
  j["params"] = plan::parameter_count(s.hp);
  j["active_params"] = plan::active_parameter_count(s.hp);
  j["ctx"] = p.ctx;
  j["seqs"] = p.seqs;
  j["kv_cache_dtype"] = kv::kv_type_name(mo.kv_type);
  j["batch_tokens"] = mo.batch_tokens;
  j["threads"] = mo.n_threads;
  j["weights_bytes"] = p.weights_bytes;
  j["file_bytes"] = p.file_bytes;
  j["token_embd_bytes"] = p.token_embd_bytes;
  j["kv_bytes_per_token"] = p.kv_bytes_per_token;
  j["kv_blocks"] = p.kv_blocks;
  j["kv_bytes"] = p.kv_bytes;
  j["weights_copied_bytes"] = s.copied_bytes;  // of file_bytes: resident load-time copies, not mapped
  j["workspace_bytes"] = p.workspace_bytes;
  j["overhead_bytes"] = p.overhead_bytes;
  j["overhead"] = {{"process", p.overhead.process}, {"metadata", p.overhead.metadata},
                   {"tokenizer", p.overhead.tokenizer}, {"threads", p.overhead.threads},
                   {"buffers", p.overhead.buffers}};
  j["total_bytes"] = p.total_bytes;
  j["budget_bytes"] = b.bytes;
  j["budget"] = b.label;
  j["fits"] = f.fits;
  j["max_ctx"] = f.max_ctx;
  j["max_seqs"] = f.max_seqs;
  nlohmann::json fallbacks = nlohmann::json::array();
  for (const auto& t : s.weights.tensors)
    if (t.type != t.wanted)
      fallbacks.push_back({{"tensor", t.name}, {"wanted", type_name(t.wanted)}, {"type", type_name(t.type)}});
  j["fallbacks"] = fallbacks;
  return j;
}

void print_single(const Subject& s, const plan::MemoryPlan& p, const plan::MemoryOptions& mo, const Budget& b,
                  const plan::Fit& f) {
  const auto& hp = s.hp;
  std::printf("model      %s, %s: %s\n", s.label.c_str(), s.type.c_str(), params_text(hp).c_str());
  const double bits = 8.0 * static_cast<double>(p.weights_bytes) / static_cast<double>(plan::parameter_count(hp));
  if (s.copied_bytes == 0) {
    std::printf("weights    %s of tensor data (%.2f bits/weight); file %s, mapped in place\n",
                plan::format_bytes(p.weights_bytes).c_str(), bits, plan::format_bytes(p.file_bytes).c_str());
  } else {  // an HF view: the safetensors are mapped, AWQ expansions and widened norms are resident copies
    std::printf("weights    %s of tensor data (%.2f bits/weight); %s: %s mapped in place + %s resident load-time "
                "F32 copies (AWQ expansions, widened norms)\n",
                plan::format_bytes(p.weights_bytes).c_str(), bits, plan::format_bytes(p.file_bytes).c_str(),
                plan::format_bytes(p.file_bytes - std::min(p.file_bytes, s.copied_bytes)).c_str(),
                plan::format_bytes(s.copied_bytes).c_str());
  }
  std::map<std::string, int> fallbacks;
  for (const auto& t : s.weights.tensors)
    if (t.type != t.wanted) ++fallbacks[cat(type_name(t.wanted), " -> ", type_name(t.type))];
  for (const auto& [what, n] : fallbacks)
    std::printf("           note: %d tensor(s) %s (rows do not fit the block size)\n", n, what.c_str());
  std::printf("KV cache   %s: %s bytes/token x %lld tokens (whole blocks of %lld) x %lld seq = %s\n",
              kv::kv_type_name(mo.kv_type), with_commas(p.kv_bytes_per_token).c_str(),
              static_cast<long long>(p.ctx), static_cast<long long>(kv::kBlockTokens), static_cast<long long>(p.seqs),
              plan::format_bytes(p.kv_bytes).c_str());
  if (p.ctx > hp.n_ctx_train)
    std::printf("           note: beyond the model's training context of %lld tokens\n",
                static_cast<long long>(hp.n_ctx_train));
  std::printf("workspace  %s (forward pass over %lld tokens, %d threads)\n", plan::format_bytes(p.workspace_bytes).c_str(),
              static_cast<long long>(mo.batch_tokens), mo.n_threads);
  std::printf("overhead   %s: runtime %s, metadata %s, tokenizer %s, threads %s, logits/sampler %s\n",
              plan::format_bytes(p.overhead_bytes).c_str(), plan::format_bytes(p.overhead.process).c_str(),
              plan::format_bytes(p.overhead.metadata).c_str(), plan::format_bytes(p.overhead.tokenizer).c_str(),
              plan::format_bytes(p.overhead.threads).c_str(), plan::format_bytes(p.overhead.buffers).c_str());
  std::printf("total      %s\n", plan::format_bytes(p.total_bytes).c_str());
  std::printf("budget     %s (%s): ", plan::format_bytes(b.bytes).c_str(), b.label.c_str());
  if (!f.weights_fit)
    std::printf("does not fit: the weights alone are %s over\n", plan::format_bytes(p.file_bytes - b.bytes).c_str());
  else if (f.fits)
    std::printf("fits, %s to spare; max ctx %lld, max seqs %lld at ctx %lld\n",
                plan::format_bytes(b.bytes - p.total_bytes).c_str(), static_cast<long long>(f.max_ctx),
                static_cast<long long>(f.max_seqs), static_cast<long long>(p.ctx));
  else
    std::printf("does not fit (%s over); max ctx %lld for %lld seq\n", plan::format_bytes(p.total_bytes - b.bytes).c_str(),
                static_cast<long long>(f.max_ctx), static_cast<long long>(p.seqs));
}

void print_table(const PlanOpts& o, const gguf::File* file, const model::HParams& hp, kv::KvType kv_type,
                 uint64_t process_base, const Budget& b) {
  const int64_t short_ctx = 8192, long_ctx = 32768;
  nlohmann::json rows = nlohmann::json::array();
  std::string label;
  if (!o.json) {
    Subject first = subject_for(o, file, hp, &plan::quant_mixes().front());
    std::printf("%s: %s; KV %s %s bytes/token; %lld seq; budget %s (%s)\n", first.label.c_str(),
                params_text(hp).c_str(), kv::kv_type_name(kv_type),
                with_commas(kv::kv_bytes_per_token(kv_type, hp.n_layer, hp.n_head_kv, hp.head_dim)).c_str(),
                static_cast<long long>(o.seqs), plan::format_bytes(b.bytes).c_str(), b.label.c_str());
    std::printf("%-7s %6s %10s %10s %10s  %-5s %-5s %8s\n", "type", "bits/w", "weights", "@8K ctx", "@32K ctx", "8K", "32K",
                "max ctx");
  }
  for (const auto& mix : plan::quant_mixes()) {
    Subject s = subject_for(o, file, hp, &mix);
    const plan::MemoryPlan p8 = plan::plan_memory(hp, s.weights, s.metadata, memory_options(o, kv_type, process_base, short_ctx));
    const plan::MemoryPlan p32 = plan::plan_memory(hp, s.weights, s.metadata, memory_options(o, kv_type, process_base, long_ctx));
    const plan::Fit f8 = plan::fit_budget(hp, p8, b.bytes), f32 = plan::fit_budget(hp, p32, b.bytes);
    const double bpw = 8.0 * static_cast<double>(p8.weights_bytes) / static_cast<double>(plan::parameter_count(hp));
    if (o.json) {
      rows.push_back({{"type", mix.name}, {"bits_per_weight", bpw}, {"weights_bytes", p8.weights_bytes},
                      {"file_bytes", p8.file_bytes}, {"total_bytes_8k", p8.total_bytes},
                      {"total_bytes_32k", p32.total_bytes}, {"fits_8k", f8.fits}, {"fits_32k", f32.fits},
                      {"max_ctx", f8.max_ctx}});
    } else {
      std::printf("%-7s %6.2f %10s %10s %10s  %-5s %-5s %8lld\n", mix.name.c_str(), bpw, gb(p8.weights_bytes).c_str(),
                  gb(p8.total_bytes).c_str(), gb(p32.total_bytes).c_str(), f8.fits ? "yes" : "no",
                  f32.fits ? "yes" : "no", static_cast<long long>(f8.max_ctx));
    }
    label = s.label;
  }
  if (o.json) {
    nlohmann::json j;
    j["model"] = label;
    j["kv_cache_dtype"] = kv::kv_type_name(kv_type);
    j["kv_bytes_per_token"] = kv::kv_bytes_per_token(kv_type, hp.n_layer, hp.n_head_kv, hp.head_dim);
    j["seqs"] = o.seqs;
    j["budget_bytes"] = b.bytes;
    j["budget"] = b.label;
    j["rows"] = rows;
    std::printf("%s\n", j.dump().c_str());
  }
}

// `moe plan --serve`: the KV pool `moe serve` would size with the same options, from the same function,
// printed as its start-up lines (or JSON). The available memory is --memory/--device when given, else
// what serve would read (MemAvailable or the cgroup's room).
int print_serve_plan(const PlanOpts& o, const Subject& s, kv::KvType kv_type, uint64_t process_base, const Budget& b) {
  plan::PoolOptions po;
  po.max_model_len = o.ctx == -1 ? 0 : o.ctx;
  po.max_model_len_given = o.ctx != -1;
  po.max_num_seqs = o.seqs_given ? o.seqs : 16;  // serve's default
  po.kv_type = kv_type;
  po.batch_tokens = o.batch;
  po.n_threads = o.threads > 0 ? o.threads : physical_core_count();
  po.http_threads = plan::serve_http_threads(po.max_num_seqs);
  po.process_base_bytes = process_base;
  po.utilization = o.utilization;
  if (b.explicit_budget) {
    po.available = b.bytes;
    po.available_source = b.label;
  } else {
    const AvailableMemory a = read_available_memory();
    po.available = a.bytes;
    po.available_source = a.source();
  }
  const plan::PoolPlan p = plan::plan_kv_pool(s.hp, s.weights, s.metadata, po);
  if (!o.json) {
    std::printf("%s", plan::describe_pool(p).c_str());
    return 0;
  }
  nlohmann::json j;
  j["model"] = s.label;
  j["available_bytes"] = po.available;
  j["available_source"] = po.available_source;
  j["utilization"] = po.utilization;
  j["usable_bytes"] = p.usable;
  j["max_model_len"] = p.max_model_len;
  j["ctx_capped"] = p.ctx_capped;
  j["max_num_seqs"] = po.max_num_seqs;
  j["kv_cache_dtype"] = kv::kv_type_name(kv_type);
  j["kv_block_bytes"] = p.block_bytes;
  j["kv_blocks"] = p.kv_blocks;
  j["kv_pool_bytes"] = p.kv_bytes;
  j["full_sequences"] = p.full_sequences();
  j["limited_by"] = p.limited_by;
  j["weights_mapped_bytes"] = p.weights_mapped;
  j["weights_resident_bytes"] = p.weights_resident;
  j["weights_cached_bytes"] = p.weights_cached;
  j["weights_paged_bytes"] = p.weights_paged();
  j["workspace_bytes"] = p.memory.workspace_bytes;
  j["overhead_bytes"] = p.memory.overhead_bytes;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// --device vulkan[:N]: the real device's memory, and what the Vulkan backend would put on it (weights
// on the card, KV mirror, workspace) and leave on the CPU, by the backend's own placement rule.
nlohmann::json device_section(const PlanOpts& o, const Subject& s, const plan::MemoryPlan& p, const plan::MemoryOptions& mo,
                              bool print) {
  std::string why;
  const std::vector<vk::DeviceInfo> devices = vk::list_devices(&why);
  if (devices.empty()) fail("--device ", o.device, ": no Vulkan device (", why, ")");
  int index = model::parse_device(o.device);
  if (index == model::kPreferredVulkanDevice) index = vk::preferred_device(devices);
  if (index < 0 || index >= static_cast<int>(devices.size()))
    fail("--device ", o.device, ": this machine has ", devices.size(), " Vulkan device(s) (`moe info --devices`)");
  const vk::DeviceInfo& d = devices[static_cast<size_t>(index)];
  const uint64_t budget = o.gpu_memory.empty() ? model::VulkanBackend::default_budget(d) : plan::parse_size(o.gpu_memory);
  nlohmann::json j;
  j["device"] = cat("vulkan:", index);
  j["device_name"] = d.name;
  j["device_memory_bytes"] = d.device_local_bytes;
  j["device_budget_bytes"] = budget;
  if (print)
    std::printf("device     vulkan:%d, %s: %s of device memory, budget %s (%s)\n", index, d.name.c_str(),
                plan::format_bytes(d.device_local_bytes).c_str(), plan::format_bytes(budget).c_str(),
                o.gpu_memory.empty() ? "less a reserve" : "--gpu-memory");
  try {
    const model::DevicePlacement dp = plan::plan_device(s.hp, s.weights, budget, mo.batch_tokens, p.kv_bytes);
    const uint64_t on_card = dp.fixed_bytes + dp.expert_bytes_on_card + dp.kv_bytes + dp.workspace_bytes;
    j["device_fits"] = true;
    j["device_fixed_bytes"] = dp.fixed_bytes;
    j["device_expert_bytes"] = dp.expert_bytes_on_card;
    j["device_kv_bytes"] = dp.kv_bytes;
    j["device_workspace_bytes"] = dp.workspace_bytes;
    j["device_total_bytes"] = on_card;
    j["experts_on_device"] = dp.experts_on_card;
    j["experts_total"] = dp.experts_total;
    j["cpu_expert_bytes"] = dp.expert_bytes_on_cpu;
    if (print) {
      std::printf("  on card  %s: weights %s + experts %s (%lld of %lld) + KV mirror %s + workspace %s\n",
                  plan::format_bytes(on_card).c_str(), plan::format_bytes(dp.fixed_bytes).c_str(),
                  plan::format_bytes(dp.expert_bytes_on_card).c_str(), static_cast<long long>(dp.experts_on_card),
                  static_cast<long long>(dp.experts_total), plan::format_bytes(dp.kv_bytes).c_str(),
                  plan::format_bytes(dp.workspace_bytes).c_str());
      if (dp.experts_on_card == dp.experts_total)
        std::printf("  on CPU   nothing: the whole model runs on the card\n");
      else
        std::printf("  on CPU   experts %s (%lld of %lld), computed from the mapped file\n",
                    plan::format_bytes(dp.expert_bytes_on_cpu).c_str(),
                    static_cast<long long>(dp.experts_total - dp.experts_on_card), static_cast<long long>(dp.experts_total));
    }
  } catch (const Error& e) {
    j["device_fits"] = false;
    j["device_error"] = e.what();
    if (print) std::printf("  does not fit: %s\n", e.what());
  }
  return j;
}

int run_plan(const PlanOpts& o) {
  // The runtime's own resident size, measured before this process touches any model (see memory.h).
  const uint64_t process_base = o.runtime_bytes.empty() ? plan::process_base_bytes(plan::current_rss_bytes())
                                                        : plan::parse_size(o.runtime_bytes);
  if (!o.model.empty() && !o.preset.empty()) fail("give a model file or --preset, not both");
  if (o.ctx != -1 && (o.ctx < 1 || o.ctx > plan::kMaxPlanCtx))
    fail("--ctx ", o.ctx, " is absurd: it must be between 1 and ", plan::kMaxPlanCtx, " tokens");
  if (o.seqs < 1 || o.seqs > (1 << 20)) fail("--seqs ", o.seqs, " must be between 1 and 1048576");
  if (o.batch < 1 || o.batch > (1 << 20)) fail("--batch ", o.batch, " must be between 1 and 1048576");
  auto kv_type = kv::parse_kv_type(o.kv_type);
  if (!kv_type) fail("unknown --kv-cache-dtype '", o.kv_type, "' (f16, bf16, q8_0, f32)");
  const Budget budget = resolve_budget(o);
  const plan::QuantMix* mix = nullptr;
  const bool all_types = o.type == "all" || o.type == "ALL";
  if (!o.type.empty() && !all_types) mix = &plan::find_mix(o.type);

  std::optional<gguf::File> file;
  model::HParams hp;
  if (!o.preset.empty()) {
    hp = plan::find_preset(o.preset).hp;
    if (o.layers) hp = plan::with_layers(hp, o.layers);
  } else {
    if (o.layers) fail("--layers applies to --preset only");
    file = hf::open_model_file(model_or_default(o.model));
    hp = model::HParams::from_gguf(*file);
  }
  const gguf::File* fp = file ? &*file : nullptr;

  if (o.serve) {
    if ((!fp && !mix) || all_types) fail("--serve plans one model: give a file, or --preset with one --type");
    return print_serve_plan(o, subject_for(o, fp, hp, mix), *kv_type, process_base, budget);
  }
  if ((!fp && !mix) || all_types) {
    print_table(o, fp, hp, *kv_type, process_base, budget);
    return 0;
  }
  const Subject s = subject_for(o, fp, hp, mix);
  const plan::MemoryOptions mo = memory_options(o, *kv_type, process_base, o.ctx == -1 ? 0 : o.ctx);
  const plan::MemoryPlan p = plan::plan_memory(hp, s.weights, s.metadata, mo);
  if (budget.explicit_budget) plan::require_weights_fit(p, budget.bytes);
  const plan::Fit f = plan::fit_budget(hp, p, budget.bytes);
  if (o.json) {
    nlohmann::json j = plan_json(s, p, mo, budget, f);
    if (vulkan_device(o)) j.update(device_section(o, s, p, mo, false));
    std::printf("%s\n", j.dump().c_str());
  } else {
    print_single(s, p, mo, budget, f);
    if (vulkan_device(o)) device_section(o, s, p, mo, true);
  }
  return 0;
}

Registrar reg("plan", "Memory plan: weights, KV cache, workspace and overhead, and whether it fits", [](CLI::App& sub) {
  auto o = std::make_shared<PlanOpts>();
  sub.add_option("model", o->model, "GGUF model file (default: the bundled model unless --preset)");
  sub.add_option("--preset", o->preset, "a model shape instead of a file: " + plan::preset_names());
  sub.add_option("--layers", o->layers, "with --preset: only the first N layers (as `moe synth --layers`)");
  sub.add_option("--type", o->type,
                 "quantization to plan for (" + plan::mix_names() + ", or 'all' for a table); default: the file's own");
  sub.add_option("-c,--ctx,--ctx-size,--max-model-len", o->ctx,
                 "context tokens per sequence (default: the model's training context)");
  CLI::Option* seqs = sub.add_option("--seqs,--parallel,--max-num-seqs", o->seqs,
                                     "sequences held at once (default 1; with --serve, 16 as serve's; also -np N)");
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f16 (default), bf16, q8_0, f32");
  sub.add_option("--memory,--memory-available", o->memory,
                 "memory budget, e.g. 24GiB, 24GB, 24e9 (with --serve: the memory available)");
  sub.add_option("--device", o->device, "budget of a named device: rtx3090, rtx4090, rtx5090, a6000, a100-40, a100, h100, h200, host; or "
                 "vulkan / vulkan:N: this machine's Vulkan device, its memory and what the Vulkan backend puts on it");
  sub.add_option("--gpu-memory", o->gpu_memory, "with --device vulkan[:N]: the device budget (default: its memory less a reserve)");
  sub.add_option("--batch", o->batch, "tokens per forward step, sizing the workspace (default 512)");
  sub.add_option("-t,--threads", o->threads, "compute threads (default: physical cores)");
  sub.add_option("--runtime-bytes", o->runtime_bytes,
                 "resident size of the runtime itself (default: measured from this process, plus the code a run "
                 "pages in)");
  sub.add_flag("--json", o->json, "print one JSON object");
  sub.add_flag("--serve", o->serve,
               "plan the KV pool `moe serve` would size with these options (from MemAvailable or the cgroup "
               "limit unless --memory/--device)");
  sub.add_option("--memory-utilization,--gpu-memory-utilization", o->utilization,
                 "with --serve: the fraction of the available memory to plan for (default 0.9)");
  return [o, seqs] {
    o->seqs_given = seqs->count() > 0;
    return run_plan(*o);
  };
});

}  // namespace
}  // namespace moe::cli

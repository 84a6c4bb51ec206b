// lora_loader.cpp: PEFT adapter directories and the server's adapter registry (see lora_loader.h).
#include "engine/lora_loader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model/spec.h"
#include "safetensors/safetensors.h"
#include "util/error.h"

namespace moe::engine {

using nlohmann::json;

namespace {

constexpr uint64_t kMaxConfigBytes = 1u << 20;

std::string read_small_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(what, ": cannot read ", path, " (", ec.message(), ")");
  if (size > kMaxConfigBytes) fail(what, ": ", path, " is ", size, " bytes (at most ", kMaxConfigBytes, " expected)");
  std::ifstream in(path, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) fail(what, ": cannot read ", path);
  return text;
}

std::string describe(const std::string& dir) { return cat("the LoRA adapter ", dir); }

std::vector<model::LoraTensor> tensors_of(const safetensors::File& f, const std::string& where) {
  std::vector<model::LoraTensor> out;
  for (const safetensors::TensorInfo& t : f.tensors()) {
    model::LoraTensor lt;
    lt.name = t.name;
    switch (t.dtype) {
      case safetensors::Dtype::F32: lt.type = GgmlType::F32; break;
      case safetensors::Dtype::F16: lt.type = GgmlType::F16; break;
      case safetensors::Dtype::BF16: lt.type = GgmlType::BF16; break;
      default:
        fail(where, ": tensor ", t.name, " has dtype ", safetensors::dtype_name(t.dtype), " (F32, F16 or BF16 expected)");
    }
    lt.shape = t.shape;
    lt.data = t.data;
    lt.bytes = static_cast<size_t>(t.n_bytes());
    out.push_back(std::move(lt));
  }
  return out;
}

struct Opened {
  model::LoraConfig config;
  safetensors::File file;
  std::vector<model::LoraTensor> tensors;
};

Opened open_dir(const std::string& dir) {
  const std::string where = describe(dir);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    fail(where, ": not a directory (a PEFT adapter is a directory with adapter_config.json and adapter_model.safetensors)");
  const std::string cfg_path = (std::filesystem::path(dir) / "adapter_config.json").string();
  const std::string st_path = (std::filesystem::path(dir) / "adapter_model.safetensors").string();
  if (!std::filesystem::exists(cfg_path, ec)) fail(where, ": adapter_config.json is missing");
  if (!std::filesystem::exists(st_path, ec)) {
    if (std::filesystem::exists(std::filesystem::path(dir) / "adapter_model.bin", ec))
      fail(where, ": only adapter_model.bin (a pickled PyTorch file) is there; save it as safetensors "
                  "(peft's save_pretrained(..., safe_serialization=True))");
    fail(where, ": adapter_model.safetensors is missing");
  }
  model::LoraConfig config = parse_lora_config(read_small_file(cfg_path, where), where + ": adapter_config.json");
  safetensors::File file = safetensors::File::open(st_path);
  auto tensors = tensors_of(file, where);
  return Opened{std::move(config), std::move(file), std::move(tensors)};
}

}  // namespace

model::LoraConfig parse_lora_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(where, ": not a JSON object");
  auto absent = [&](const char* key) { return !j.contains(key) || j[key].is_null(); };
  model::LoraConfig c;
  if (!absent("peft_type") && j["peft_type"] != "LORA")
    fail(where, ": peft_type is ", j["peft_type"].dump(), ", not \"LORA\"");
  if (absent("r") || !j["r"].is_number_integer()) fail(where, ": 'r' (the rank) is missing or not an integer");
  c.rank = j["r"].get<int64_t>();
  if (c.rank < 1) fail(where, ": rank r = ", c.rank, " ('r' must be at least 1)");
  if (absent("lora_alpha")) {
    c.alpha = static_cast<double>(c.rank);  // peft's default alpha is 8 with r 8: scale 1; so alpha = r
  } else {
    if (!j["lora_alpha"].is_number()) fail(where, ": 'lora_alpha' is not a number");
    c.alpha = j["lora_alpha"].get<double>();
  }
  if (!absent("use_rslora")) {
    if (!j["use_rslora"].is_boolean()) fail(where, ": 'use_rslora' is not true or false");
    c.rslora = j["use_rslora"].get<bool>();
  }
  auto refuse_true = [&](const char* key, const char* why) {
    if (!absent(key) && j[key].is_boolean() && j[key].get<bool>()) fail(where, ": '", key, "' is true: ", why);
  };
  refuse_true("use_dora", "DoRA adapters are not supported");
  refuse_true("fan_in_fan_out", "transposed (Conv1D) weights do not fit a Llama/Mixtral base");
  if (!absent("bias") && j["bias"] != "none")
    fail(where, ": 'bias' is ", j["bias"].dump(), ": adapters with trained biases are not supported (only \"none\")");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (!absent(key) && !(j[key].is_object() && j[key].empty()))
      fail(where, ": '", key, "' is set: per-module ranks or alphas are not supported");
  if (!absent("modules_to_save") && !(j["modules_to_save"].is_array() && j["modules_to_save"].empty()))
    fail(where, ": 'modules_to_save' is set: adapters that replace whole modules (", j["modules_to_save"].dump(),
         ") are not supported");
  if (!absent("layers_to_transform")) fail(where, ": 'layers_to_transform' is set: not supported");
  if (!absent("target_modules")) {
    const json& t = j["target_modules"];
    if (t.is_string())
      fail(where, ": 'target_modules' is the pattern ", t.dump(), "; list the modules instead (q_proj, k_proj, v_proj, "
           "o_proj, w1, w2, w3)");
    if (!t.is_array()) fail(where, ": 'target_modules' is not a list");
    for (const json& m : t) {
      if (!m.is_string()) fail(where, ": 'target_modules' holds ", m.dump(), ", not a module name");
      c.target_modules.push_back(m.get<std::string>());
    }
  }
  return c;
}

LoraInfo inspect_lora(const std::string& dir, const model::ModelSpec& base) {
  return inspect_lora(dir, base.hp, model::qk_row_order(base.hp));
}

LoraInfo inspect_lora(const std::string& dir, const model::HParams& hp, model::QkRowOrder order) {
  Opened o = open_dir(dir);
  auto w = model::bind_lora(hp, o.config, o.tensors, order, dir, true);
  return LoraInfo{dir, o.config, w->bytes};
}

std::shared_ptr<const model::LoraWeights> load_lora(const std::string& dir, const model::ModelSpec& base) {
  return load_lora(dir, base.hp, model::qk_row_order(base.hp));
}

std::shared_ptr<const model::LoraWeights> load_lora(const std::string& dir, const model::HParams& hp,
                                                    model::QkRowOrder order) {
  Opened o = open_dir(dir);
  return model::bind_lora(hp, o.config, o.tensors, order, dir);
}

LoraArg parse_lora_arg(const std::string& arg) {
  LoraArg a{arg, 1.0f};
  const size_t colon = arg.rfind(':');
  if (colon != std::string::npos && colon + 1 < arg.size()) {
    float v = 0;
    const char* b = arg.data() + colon + 1;
    const char* e = arg.data() + arg.size();
    auto r = std::from_chars(b, e, v);
    if (r.ec == std::errc() && r.ptr == e) {
      if (!std::isfinite(v)) fail("--lora ", arg, ": the scale is not finite");
      a.path = arg.substr(0, colon);
      a.scale = v;
    }
  }
  if (a.path.empty()) fail("--lora ", arg, ": no adapter directory");
  return a;
}

std::shared_ptr<const model::LoraAdapter> load_lora_stack(const std::vector<std::string>& args,
                                                          const model::ModelSpec& base) {
  if (args.empty()) return nullptr;
  std::vector<model::LoraAdapter::Part> parts;
  std::string name;
  for (const std::string& s : args) {
    const LoraArg a = parse_lora_arg(s);
    auto w = load_lora(a.path, base);
    parts.push_back({w, w->scale * a.scale});
    name += (name.empty() ? "" : "+") + std::filesystem::path(a.path).filename().string();
  }
  return std::make_shared<const model::LoraAdapter>(name, std::move(parts));
}

// ---------------------------------------------------------------------------------------------------

LoraRegistry::Module LoraRegistry::parse_module(const std::string& arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    fail("--lora-modules ", arg, ": expected NAME=PATH (the name requests give as 'model', the adapter directory)");
  return Module{arg.substr(0, eq), arg.substr(eq + 1)};
}

LoraRegistry::LoraRegistry(std::shared_ptr<const LoadedModel> base, std::vector<Module> modules, int max_loaded)
    : base_(std::move(base)), modules_(std::move(modules)), max_loaded_(max_loaded) {
  if (!base_) fail("internal: a LoRA registry needs a base model");
  for (size_t i = 0; i < modules_.size(); ++i) {
    const Module& m = modules_[i];
    for (size_t k = 0; k < i; ++k)
      if (modules_[k].name == m.name) fail("--lora-modules: the name '", m.name, "' is given twice");
    Entry e;
    try {
      e.declared = inspect_lora(m.path, *base_->model->spec()).bytes;
    } catch (const Error& err) {
      fail("--lora-modules: the adapter '", m.name, "' cannot be used: ", err.what());
    }
    entries_.push_back(std::move(e));
  }
}

bool LoraRegistry::has(const std::string& name) const {
  return std::any_of(modules_.begin(), modules_.end(), [&](const Module& m) { return m.name == name; });
}

std::shared_ptr<const model::LoraAdapter> LoraRegistry::get(const std::string& name) {
  size_t i = 0;
  while (i < modules_.size() && modules_[i].name != name) ++i;
  if (i == modules_.size()) fail("no LoRA adapter is named '", name, "'");
  {
    std::lock_guard lock(mu_);
    if (entries_[i].adapter) {
      entries_[i].last_use = ++clock_;
      auto a = entries_[i].adapter;
      evict_locked(i);
      return a;
    }
  }
  std::lock_guard load_lock(load_mu_);
  {
    std::lock_guard lock(mu_);  // another request may have loaded it meanwhile
    if (entries_[i].adapter) return entries_[i].adapter;
  }
  std::shared_ptr<const model::LoraAdapter> a;
  try {
    auto w = load_lora(modules_[i].path, *base_->model->spec());
    a = std::make_shared<const model::LoraAdapter>(name, std::vector<model::LoraAdapter::Part>{{w, w->scale}});
  } catch (const Error& err) {
    fail("the LoRA adapter '", name, "' cannot be loaded: ", err.what());
  }
  std::lock_guard lock(mu_);
  entries_[i].adapter = a;
  entries_[i].last_use = ++clock_;
  evict_locked(i);
  return a;
}

void LoraRegistry::evict_locked(size_t keep) {
  if (max_loaded_ <= 0) return;
  // Over the limit: drop the least recently used adapters no request holds (use_count 1: only the
  // registry's reference), never `keep` (the one being handed out).
  for (;;) {
    int64_t n = 0;
    Entry* lru = nullptr;
    for (size_t k = 0; k < entries_.size(); ++k) {
      Entry& e = entries_[k];
      if (!e.adapter) continue;
      ++n;
      if (k != keep && e.adapter.use_count() == 1 && (!lru || e.last_use < lru->last_use)) lru = &e;
    }
    if (n <= max_loaded_ || !lru) return;
    lru->adapter.reset();
  }
}

int64_t LoraRegistry::loaded_count() const {
  std::lock_guard lock(mu_);
  return std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.adapter != nullptr; });
}

uint64_t LoraRegistry::loaded_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t b = 0;
  for (const Entry& e : entries_)
    if (e.adapter) b += e.adapter->bytes();
  return b;
}

uint64_t LoraRegistry::declared_bytes() const {
  uint64_t b = 0;
  for (const Entry& e : entries_) b += e.declared;
  return b;
}

uint64_t LoraRegistry::declared_bytes(const std::string& name) const {
  for (size_t i = 0; i < modules_.size(); ++i)
    if (modules_[i].name == name) return entries_[i].declared;
  return 0;
}

}  // namespace moe::engine

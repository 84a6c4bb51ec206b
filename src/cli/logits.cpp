// logits.cpp: `moe logits MODEL --tokens 1,2,3 --out FILE`: runs one forward pass over a token
// sequence (positions 0..n-1, one sequence) and writes the logits of every position as float32
// little-endian [n_tokens][n_vocab]. This is how the engine is checked against reference logits
// (`--exact --kv-cache-dtype f32` gives the exact function of the dequantized weights). `--lora DIR[:SCALE]`
// (repeatable) runs the sequence with PEFT LoRA adapters as a side path, as run, chat and serve do.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "engine/lora_loader.h"
#include "kv/cache.h"
#include "model/model.h"
#include "util/error.h"

namespace moe::cli {
namespace {

struct LogitsOpts {
  std::string model;
  std::string tokens;
  std::string out;
  std::string kv_type = "f16";
  bool exact = false;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  std::vector<std::string> lora;  // --lora DIR[:SCALE]
};

// "1,2,3" (commas or whitespace), or "@path" to read the same from a file.
std::vector<int32_t> parse_token_list(const std::string& spec) {
  std::string text = spec;
  if (!spec.empty() && spec[0] == '@') {
    std::ifstream in(spec.substr(1));
    if (!in) fail("cannot read token file '", spec.substr(1), "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  std::vector<int32_t> ids;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(cur, &used);
    } catch (...) {
      used = 0;
    }
    if (used != cur.size() || v < 0 || v > INT32_MAX) fail("bad token id '", cur, "' in --tokens");
    ids.push_back(static_cast<int32_t>(v));
    cur.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r')
      flush();
    else
      cur += c;
  }
  flush();
  if (ids.empty()) fail("--tokens is empty");
  return ids;
}

int run_logits(const LogitsOpts& o) {
  auto kv_type = kv::parse_kv_type(o.kv_type);
  if (!kv_type) fail("unknown --kv-cache-dtype '", o.kv_type, "' (f32, f16, bf16, q8_0)");
  const std::vector<int32_t> ids = parse_token_list(o.tokens);

  model::ModelOptions mo;
  mo.n_threads = o.threads;
  mo.device = o.dev.device;
  mo.gpu_memory = o.dev.gpu_memory_bytes();
  mo.precision = o.exact ? model::Precision::Exact : model::Precision::Fast;
  mo.max_batch_tokens = std::min<int64_t>(static_cast<int64_t>(ids.size()), 512);
  auto m = model::Model::load(o.model, mo);
  const auto n = static_cast<int64_t>(ids.size());
  if (n > m->hparams().n_ctx_train)
    fail(n, " tokens exceed the model's context length ", m->hparams().n_ctx_train);

  const auto adapter = engine::load_lora_stack(o.lora, *m->spec());

  kv::Cache cache(m->kv_geometry(*kv_type), kv::Cache::blocks_for_tokens(n));
  model::Batch batch;
  for (int64_t i = 0; i < n; ++i) batch.add(ids[i], static_cast<int32_t>(i), 0, true, adapter.get());
  model::ForwardResult res;
  m->forward(batch, cache, res);

  std::ofstream out(o.out, std::ios::binary);
  if (!out) fail("cannot write '", o.out, "'");
  // float32 little-endian: the in-memory layout on the x86-64 hosts this engine targets.
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "logits are written in host order");
  out.write(reinterpret_cast<const char*>(res.logits.data()), static_cast<std::streamsize>(res.logits.size() * sizeof(float)));
  if (!out) fail("error writing '", o.out, "'");
  return 0;
}

const Registrar reg("logits", "Write the logits of every position of a token sequence (float32 LE)", [](CLI::App& sub) {
  auto o = std::make_shared<LogitsOpts>();
  sub.add_option("model", o->model, "GGUF model file")->required();
  sub.add_option("--tokens", o->tokens, "token ids, comma-separated, or @FILE")->required();
  sub.add_option("--out", o->out, "output file: float32 LE [n_tokens][n_vocab]")->required();
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f32, f16, bf16, q8_0")->capture_default_str();
  sub.add_flag("--exact", o->exact, "float activations and double accumulation (the exact function of the weights)");
  sub.add_option("-t,--threads", o->threads, "threads (0: physical cores)");
  add_device_options(sub, o->dev);
  sub.add_option("--lora", o->lora, "PEFT LoRA adapter directory, optionally :SCALE (a factor on alpha/r); repeatable")
      ->allow_extra_args(false);
  return [o] { return run_logits(*o); };
});

}  // namespace
}  // namespace moe::cli

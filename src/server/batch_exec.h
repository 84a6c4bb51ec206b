// batch_exec.h: answers the lines of an OpenAI batch file through a Backend, exactly as the HTTP routes
// answer the same bodies: the body goes through the same parsers (request.h: same validation, same
// error JSON naming the field) and the answer through the same builders (response.h), so a batch line
// and a POST of its body give the same JSON (only the ids and `created` differ, and those are fixed per
// line so that re-runs, shards and MPI ranks write identical bytes; see batch/format.h).
//
// BatchRunner::run keeps `in_flight` lines going at once from as many worker threads, each blocking on
// its own request; the engine batches whatever is in flight (continuous batching, prefix caching across
// requests that share a system prompt). Every answer is appended to the job's journal (batch/journal.h)
// before it counts as done. stop() cancels what is in flight without recording it (it will be asked
// again on resume), which is how `moe serve` shuts down or cancels a batch and how `moe batch` stops on
// SIGINT. Used by both `moe batch` (src/cli/batch.cpp) and the Batch API of `moe serve`
// (batch_routes.h); kept in the server layer because it is the server's request path without HTTP.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "batch/format.h"
#include "batch/journal.h"
#include "server/backend.h"

namespace moe::server {

struct BatchExecOptions {
  std::string served_model_name = "moe";
  std::vector<std::string> model_aliases;  // other names accepted in a body's "model"
  std::string id_salt;                      // mixed into every id (the batch id on the server)
  int64_t created = 0;                      // "created" of every response; 0: the time of each answer
};

struct LineAnswer {
  bool to_errors = false;           // not a 200: the line goes to the errors file
  std::string line;                 // the complete output line
  int64_t completion_tokens = 0;    // generated tokens (for progress)
};

struct BatchProgress {
  int64_t done = 0, total = 0, failed = 0;  // of this run's lines
  int64_t generated_tokens = 0;
  double elapsed_s = 0;
};

class BatchRunner {
 public:
  BatchRunner(Backend& backend, BatchExecOptions options);

  // The answer to line `index` of `input`; nullopt when stop() cancelled it.
  std::optional<LineAnswer> answer(const batch::Input& input, int64_t index);

  // Answers every index of `todo` with `in_flight` workers, appending each answer to `journal` (synced
  // in groups and at the end). Returns when all are answered or after stop(); rethrows the first
  // journal error (batch::DiskFull on a full disk) once the other workers have stopped.
  void run(const batch::Input& input, const std::vector<int64_t>& todo, batch::JournalWriter& journal,
           int in_flight, const std::function<void(const BatchProgress&)>& on_progress);

  // From any thread: no new lines, in-flight requests cancelled and not recorded.
  void stop();
  bool stopped() const { return stopped_; }

 private:
  // in_order: the same body in sent key order when it carries a JSON Schema (request.h), else null.
  std::string generate(const nlohmann::json& body, const nlohmann::ordered_json* in_order,
                       batch::Endpoint endpoint, const batch::LineIds& ids, int64_t& completion_tokens,
                       bool& cancelled);
  std::string embeddings(const nlohmann::json& body);
  // The base's names give null; a LoRA adapter's name (the backend's adapter_names, `--lora-modules`)
  // gives that adapter, loaded on first use; anything else is a 404 naming what is served.
  std::shared_ptr<const model::LoraAdapter> resolve_model(const std::optional<std::string>& model);
  void check_model(const std::optional<std::string>& model) const;  // the 404 alone, loading nothing
  bool is_base(const std::string& model) const;
  uint64_t submit(engine::Request r, engine::Callbacks cb, bool& cancelled);
  void forget(uint64_t id);

  Backend& backend_;
  BatchExecOptions opts_;
  std::atomic<bool> stopped_{false};
  std::mutex live_mu_;
  std::set<uint64_t> live_;  // engine ids in flight
};

}  // namespace moe::server

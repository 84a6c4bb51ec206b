// batch_routes.h: OpenAI's Batch API on `moe serve` (enabled by --data-dir):
//   POST /v1/files (multipart: purpose=batch, file)   GET /v1/files, /v1/files/{id}, /v1/files/{id}/content
//   POST /v1/batches {input_file_id, endpoint, completion_window: "24h", metadata}
//   GET /v1/batches (?limit, ?after), /v1/batches/{id}     POST /v1/batches/{id}/cancel
// with OpenAI's object shapes ("file", "batch", "list") and statuses (validating, in_progress,
// finalizing, completed, failed, cancelling, cancelled).
//
// Everything lives under the data directory, written so that a crash or restart loses nothing:
//   files/<id>.jsonl + files/<id>.json      uploads (content first, fsync'ed, then the object: the commit)
//   batches/<id>.json                       the batch object, replaced atomically on every status change
//   batches/<id>.state/                     the job's journal (batch/journal.h) while it runs
// On start every batch that was validating, in progress, finalizing or cancelling is queued again and
// resumes from its journal; the output and error files get ids derived from the batch id, so finishing
// twice writes the same files. One job runs at a time through BatchRunner (batch_exec.h) with a small
// number of requests in flight (ServerOptions::batch_in_flight): interactive requests share the same
// engine queue, so this cap is what keeps their latency — the engine itself has no priorities.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/backend.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace moe::server {

struct BatchApiOptions {
  std::string data_dir;
  size_t max_upload_bytes = size_t(512) << 20;
  int in_flight = 4;
  std::string served_model_name = "moe";
  std::vector<std::string> model_aliases;
};

class BatchRoutes {
 public:
  // Runs `fn` under the server's bookkeeping: counts it as active, checks shutdown and the API key,
  // turns exceptions into OpenAI's error JSON.
  using Guarded = std::function<void(const httplib::Request&, httplib::Response&, const std::function<void()>&)>;

  // Creates the data directory's layout and loads its files and batches (throws moe::Error).
  BatchRoutes(Backend& backend, BatchApiOptions options, Guarded guarded);
  ~BatchRoutes();

  void install(httplib::Server& http);
  // Starts the job thread (unfinished batches first).
  void start();
  // Stops the running job (its in-flight requests are cancelled and asked again after a restart) and
  // the job thread. Idempotent.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::server

// server.h: the OpenAI-compatible HTTP server of `moe serve` (cpp-httplib's routing and handlers over
// our own strict HTTP/1.1 transport, http_transport.h).
//
// Routes: POST /v1/chat/completions, /v1/completions, /v1/embeddings, /tokenize, /detokenize;
// GET /v1/models, /v1/models/{id}, /health, /metrics. Each generation request becomes n engine
// requests whose callbacks push into a per-request queue; a non-streamed answer is assembled from it,
// a streamed one is written as SSE chunks by httplib's chunked content provider. Either way the socket
// is watched while the answer is being made, and the engine requests are cancelled (their KV blocks
// freed) within about 100 ms of the client going away.
//
// No request can take the server down: bodies are bounded (413), every field is validated
// (request.h), and every handler turns any exception into an OpenAI error JSON. shutdown() (on
// SIGTERM) answers new requests with 503, lets the engine finish what is in flight, waits for those
// answers to be written, then stops; what is still running after shutdown_timeout_s is cancelled.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "server/backend.h"
#include "server/metrics.h"
#include "server/request.h"

namespace moe::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: any free port (bind() says which)
  std::string api_key;                      // empty: no key needed
  std::string served_model_name = "moe";
  std::vector<std::string> model_aliases;   // other names accepted in "model" (the file name, the path)
  size_t max_body_bytes = bounds::kMaxBodyBytes;
  int http_threads = 128;                   // requests answered at once (streams hold one each)
  double shutdown_timeout_s = 30;           // drain deadline after shutdown(): then in-flight work is cancelled
  // The transport (http_transport.h): connection bounds and the whole-request deadline.
  size_t max_connections = 1024;
  size_t max_connections_per_ip = 256;
  double request_timeout_s = 30;            // head and body of one request, plus its body at 1 MiB/s
  double idle_timeout_s = 30;               // keep-alive connections between requests
  // CORS: origins allowed to call the API from a browser ("*": any); empty: no CORS headers at all.
  std::vector<std::string> cors_origins;
  // The Batch API (batch_routes.h): on when data_dir is set.
  std::string data_dir;
  size_t max_upload_bytes = size_t(512) << 20;
  int batch_in_flight = 4;                  // batch requests in flight beside interactive ones
};

class Server {
 public:
  Server(Backend& backend, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port. Throws moe::Error when it cannot.
  int bind();
  // Serves until shutdown() has finished. Call after bind().
  void run();
  // Graceful stop, from any thread (idempotent): 503 for new requests, Backend::drain(), wait for the
  // in-flight answers to be written; at shutdown_timeout_s, cancel what is left (its connections are
  // ended, so handlers cancel their engine requests); then stop listening so run() returns.
  void shutdown();

  const Metrics& metrics() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::server

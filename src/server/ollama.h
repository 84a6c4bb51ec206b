// ollama.h: the Ollama API on the same server and port as the OpenAI one, so clients written for
// Ollama (the `ollama` libraries, Open WebUI, editor plugins) work unchanged:
//   POST /api/generate, /api/chat      streamed NDJSON (one JSON object per line) by default, or one
//                                      object with "stream": false; durations in nanoseconds,
//                                      eval_count, prompt_eval_count, done_reason as Ollama's
//   POST /api/embed, /api/embeddings   mean-pooled embeddings (as /v1/embeddings)
//   POST /api/show, GET /api/tags, GET /api/ps, GET /api/version
//   POST /api/pull, /api/push, /api/create, /api/copy, DELETE /api/delete, /api/blobs/...: 501 with a
//                                      message saying that moe serves the local file it was started with
// Errors are Ollama's {"error": "message"} with the HTTP status; in a stream, a line {"error": ...}.
// Model names come as Ollama clients send them, "name:tag": the served name, any alias (file name,
// path) and each of those with ":latest" are the loaded model.
//
// Why a registration function over a context of hooks: the routes need the server's bookkeeping
// (API key and shutdown checks, the in-flight count that graceful shutdown waits on, body limits)
// but not its OpenAI job machinery, so server.cpp lends exactly those and stays the owner of them.
#pragma once
#include <httplib.h>

#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "server/backend.h"
#include "server/request.h"

namespace moe::server {

// The Ollama API version /api/version reports: the Ollama release whose documented API these routes
// follow (clients compare it to decide which features to use, e.g. structured "format").
inline constexpr const char* kOllamaApiVersion = "0.6.0";

struct OllamaContext {
  Backend* backend = nullptr;
  std::string served_model_name;
  std::vector<std::string> model_aliases;
  std::function<void()> enter, leave;  // the server's in-flight count (graceful shutdown waits on it)
  // Shutdown (503) and API key (401) checks; throws ApiError.
  std::function<void(const httplib::Request&)> admit;
  // Reads the body within the size limit; throws ApiError(413).
  std::function<std::string(const httplib::Response&, const httplib::ContentReader&)> read_body;
  // Any exception to an ApiError with the right status.
  std::function<ApiError(std::exception_ptr)> translate;
};

void register_ollama_routes(httplib::Server& http, OllamaContext ctx);

}  // namespace moe::server

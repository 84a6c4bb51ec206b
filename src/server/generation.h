// generation.h: the steps that the OpenAI routes (server.cpp) and the batch runner (batch_exec.cpp)
// share between a parsed request and the engine: the prompts of a request, the token budget against the
// context, the engine request of each choice, and embeddings with their checks. One copy, so an HTTP
// request and the same body in a batch file are validated and answered alike.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/backend.h"
#include "server/request.h"

namespace moe::server {

// The chat template's rendering of a chat request's messages with BOS once; the template's own error
// becomes a 400 naming `messages`.
std::vector<int32_t> chat_prompt_ids(const Backend& backend, const nlohmann::json& messages);
// A completion prompt or embedding input as ids: token ids as given, text tokenized with the model's BOS.
std::vector<int32_t> prompt_ids(const Backend& backend, const PromptInput& in);

// A prompt's length against the context `ctx`, which must leave room for one token; returns its
// max_tokens (the request's, capped by the room left). 400 naming `param` for an empty or too long prompt.
int64_t completion_budget(int64_t ctx, size_t prompt_len, const GenerationParams& gen, const std::string& param);

// The engine request of choice `i` of `gen.n` for one prompt: a seeded request's choices get seeds
// seed, seed + 1, … so they differ; `stop_ids` are the template's end-of-turn ids (chat) or none.
engine::Request choice_request(const std::vector<int32_t>& prompt, int64_t max_tokens, const GenerationParams& gen,
                               int i, const std::vector<int32_t>& stop_ids);

// POST /v1/embeddings: every input embedded (each checked against the context and `dimensions`), as
// the OpenAI response body. `client_gone` (may be empty) is polled while the inputs are computed; when
// it answers true the work stops (the engine drops the input between chunks) and a 499 ApiError is
// thrown.
nlohmann::json embeddings_response(Backend& backend, const EmbeddingRequest& r, const std::string& served_model_name,
                                   const std::function<bool()>& client_gone = {});

}  // namespace moe::server

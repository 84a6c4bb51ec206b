// routing_trace.h: the JSON of the per-request routing trace (the opt-in `"moe": {"routing": true}` of
// the OpenAI and Ollama routes, and `moe run --routing-trace FILE`). One entry per generated token, in
// order: {"experts": [[e, ...] per layer], "weights": [[w, ...] per layer]} with k experts per layer,
// highest weight first (ties to the lower id), each layer's weights summing to 1. Entry i describes the
// forward position whose logits produced token i (the last prompt token for the first one). Kept
// apart from the routes so every frontend writes the same shape.
#pragma once
#include <nlohmann/json.hpp>

#include <vector>

#include "engine/engine.h"

namespace moe::server {

nlohmann::json token_routing_json(const engine::Delta::TokenRouting& r);
nlohmann::json routing_json(const std::vector<engine::Delta::TokenRouting>& tokens);

}  // namespace moe::server

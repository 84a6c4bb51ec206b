// routing_trace.cpp: see routing_trace.h.
#include "server/routing_trace.h"

namespace moe::server {

nlohmann::json token_routing_json(const engine::Delta::TokenRouting& r) {
  nlohmann::json experts = nlohmann::json::array(), weights = nlohmann::json::array();
  for (int32_t l = 0; l < r.n_layer; ++l) {
    nlohmann::json e = nlohmann::json::array(), w = nlohmann::json::array();
    for (int32_t j = 0; j < r.k; ++j) {
      const auto at = static_cast<size_t>(l) * static_cast<size_t>(r.k) + static_cast<size_t>(j);
      e.push_back(r.experts[at]);
      w.push_back(r.weights[at]);
    }
    experts.push_back(std::move(e));
    weights.push_back(std::move(w));
  }
  return {{"experts", std::move(experts)}, {"weights", std::move(weights)}};
}

nlohmann::json routing_json(const std::vector<engine::Delta::TokenRouting>& tokens) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : tokens) out.push_back(token_routing_json(t));
  return out;
}

}  // namespace moe::server

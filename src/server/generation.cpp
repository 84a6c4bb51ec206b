// generation.cpp: see generation.h.
#include "server/generation.h"

#include <algorithm>

#include "server/response.h"
#include "util/error.h"

namespace moe::server {

std::vector<int32_t> chat_prompt_ids(const Backend& backend, const nlohmann::json& messages) {
  try {
    return backend.chat_prompt(messages);
  } catch (const moe::Error& e) {
    throw invalid_param("messages", cat("the chat template rejected the messages: ", e.what()), "template_error");
  }
}

std::vector<int32_t> prompt_ids(const Backend& backend, const PromptInput& in) {
  return in.is_tokens ? in.tokens : backend.tokenize(in.text, /*add_bos=*/true);
}

int64_t completion_budget(int64_t ctx, size_t prompt_len, const GenerationParams& gen, const std::string& param) {
  if (prompt_len == 0) throw invalid_param(param, "the prompt is empty (it has no tokens)");
  const int64_t n = int64_t(prompt_len);
  if (n + 1 > ctx)
    throw ApiError(400,
                   cat("the prompt is ", n, " tokens, but this model's context is ", ctx,
                       " tokens and at least 1 must be left for the completion: ", n + 1 - ctx, " tokens too many"),
                   param, "invalid_request_error", "context_length_exceeded");
  const int64_t room = ctx - n;
  return gen.max_tokens ? std::min(*gen.max_tokens, room) : room;
}

engine::Request choice_request(const std::vector<int32_t>& prompt, int64_t max_tokens, const GenerationParams& gen,
                               int i, const std::vector<int32_t>& stop_ids) {
  engine::Request r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling = gen.sampling;
  if (gen.sampling.seed) r.sampling.seed = *gen.sampling.seed + uint64_t(i);
  r.stop = gen.stop;
  r.stop_token_ids = stop_ids;
  r.ignore_eos = gen.ignore_eos;
  r.routing_trace = gen.routing_trace;
  return r;
}

nlohmann::json embeddings_response(Backend& backend, const EmbeddingRequest& r, const std::string& served_model_name,
                                   const std::function<bool()>& client_gone) {
  std::vector<std::vector<float>> vectors;
  int64_t total = 0;
  const int64_t ctx = backend.max_model_len();
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const std::string param = r.inputs.size() > 1 ? cat("input[", i, "]") : "input";
    std::vector<int32_t> ids = prompt_ids(backend, r.inputs[i]);
    if (ids.empty()) throw invalid_param(param, "the input is empty (it has no tokens)");
    if (int64_t(ids.size()) > ctx)
      throw ApiError(400,
                     cat("the input is ", ids.size(), " tokens, but this model's context is ", ctx, " tokens: ",
                         int64_t(ids.size()) - ctx, " tokens too many"),
                     param, "invalid_request_error", "context_length_exceeded");
    total += int64_t(ids.size());
    std::optional<std::vector<float>> v = backend.embed_until(ids, client_gone);
    if (!v)
      throw ApiError(499, "the client closed the connection before the answer was ready", "", "invalid_request_error",
                     "client_closed_request");
    vectors.push_back(std::move(*v));
    if (r.dimensions && *r.dimensions != int64_t(vectors.back().size()))
      throw invalid_param("dimensions", cat("'dimensions' must be ", vectors.back().size(),
                                            " (this model's embedding size), got ", *r.dimensions));
  }
  return embeddings_json(served_model_name, vectors, r.base64, total);
}

}  // namespace moe::server

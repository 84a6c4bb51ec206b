// request.cpp: validation of the OpenAI request bodies (see request.h for the bounds table).
// Each getter treats a JSON null like an absent field (clients send nulls for unset options) and names
// the field, with its full path, in any error.
#include "server/request.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "grammar/grammar.h"
#include "util/error.h"
#include "util/json_limits.h"

namespace moe::server {

using nlohmann::json;
using nlohmann::ordered_json;

ApiError invalid_param(const std::string& param, const std::string& message, const std::string& code) {
  return ApiError(400, message, param, "invalid_request_error", code);
}

namespace {

const char* json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

ApiError wrong_type(const std::string& param, const char* expected, const json& got) {
  return invalid_param(param, cat("'", param, "' must be ", expected, ", got ", json_type_name(got)),
                       "invalid_type");
}

// The field's value, or nullptr when absent or null.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<bool> get_bool(const json& body, const char* key, const std::string& param) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(param, "a boolean", *v);
  return v->get<bool>();
}

std::optional<std::string> get_string(const json& body, const char* key, const std::string& param) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(param, "a string", *v);
  return v->get<std::string>();
}

int64_t as_int(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw wrong_type(param, "an integer", v);
  bool too_big = v.is_number_unsigned() &&
                 v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  int64_t x = too_big ? std::numeric_limits<int64_t>::max() : v.get<int64_t>();
  if (too_big || x < lo || x > hi) {
    std::string range = hi == std::numeric_limits<int64_t>::max() ? cat("at least ", lo)
                                                                   : cat("between ", lo, " and ", hi);
    throw invalid_param(param, cat("'", param, "' must be ", range, ", got ", v.dump()));
  }
  return x;
}

std::optional<int64_t> get_int(const json& body, const char* key, const std::string& param, int64_t lo,
                               int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  return as_int(*v, param, lo, hi);
}

// A number in [lo, hi] (or (lo, hi] when lo_open).
std::optional<double> get_number(const json& body, const char* key, const std::string& param, double lo,
                                 double hi, bool lo_open = false) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw wrong_type(param, "a number", *v);
  double x = v->get<double>();
  bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok)
    throw invalid_param(param, cat("'", param, "' must be in ", lo_open ? "(" : "[", lo, ", ", hi, "], got ",
                                   v->dump()));
  return x;
}

std::optional<std::string> get_model(const json& body) { return get_string(body, "model", "model"); }

std::vector<int32_t> parse_token_ids(const json& arr, const std::string& param, int32_t n_vocab) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& v = arr[i];
    std::string p = cat(param, "[", i, "]");
    if (!v.is_number_integer()) throw wrong_type(p, "a token id (an integer)", v);
    ids.push_back(static_cast<int32_t>(as_int(v, p, 0, int64_t(n_vocab) - 1)));
  }
  return ids;
}

// prompt / input: a string, an array of strings, an array of token ids, or an array of such arrays.
std::vector<PromptInput> parse_prompts(const json& v, const std::string& param, int32_t n_vocab,
                                       size_t max_count) {
  std::vector<PromptInput> out;
  if (v.is_string()) {
    out.push_back({false, v.get<std::string>(), {}});
    return out;
  }
  const char* shapes = "a string, an array of strings, an array of token ids or an array of arrays of token ids";
  if (!v.is_array()) throw wrong_type(param, shapes, v);
  if (v.empty()) throw invalid_param(param, cat("'", param, "' must not be empty"));
  const json& first = v[0];
  if (first.is_number_integer()) {
    out.push_back({true, {}, parse_token_ids(v, param, n_vocab)});
    return out;
  }
  if (v.size() > max_count)
    throw invalid_param(param, cat("'", param, "' has ", v.size(), " entries; at most ", max_count, " are allowed"));
  for (size_t i = 0; i < v.size(); ++i) {
    const json& e = v[i];
    std::string p = cat(param, "[", i, "]");
    if (first.is_string() && e.is_string()) {
      out.push_back({false, e.get<std::string>(), {}});
    } else if (first.is_array() && e.is_array()) {
      if (e.empty()) throw invalid_param(p, cat("'", p, "' must not be empty"));
      out.push_back({true, {}, parse_token_ids(e, p, n_vocab)});
    } else {
      throw wrong_type(param, shapes, v);
    }
  }
  return out;
}

json normalise_messages(const json& body) {
  const json* msgs = field(body, "messages");
  if (!msgs) throw invalid_param("messages", "'messages' is required", "missing_required_parameter");
  if (!msgs->is_array()) throw wrong_type("messages", "an array", *msgs);
  if (msgs->empty()) throw invalid_param("messages", "'messages' must contain at least one message");
  if (msgs->size() > bounds::kMaxMessages)
    throw invalid_param("messages", cat("'messages' has ", msgs->size(), " messages; at most ",
                                        bounds::kMaxMessages, " are allowed"));
  json out = json::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    std::string p = cat("messages[", i, "]");
    if (!m.is_object()) throw wrong_type(p, "an object", m);
    auto role = get_string(m, "role", p + ".role");
    if (!role) throw invalid_param(p + ".role", cat("'", p, ".role' is required"), "missing_required_parameter");
    if (*role == "developer") role = "system";
    if (*role != "system" && *role != "user" && *role != "assistant" && *role != "tool")
      throw invalid_param(p + ".role", cat("'", p, ".role' must be one of system, developer, user, assistant, tool; got '",
                                           *role, "'"));
    std::string content;
    const json* c = field(m, "content");
    if (!c) {
      if (*role != "assistant")
        throw invalid_param(p + ".content", cat("'", p, ".content' is required"), "missing_required_parameter");
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      // OpenAI content parts: only text parts carry meaning for a text model; they are joined.
      for (size_t j = 0; j < c->size(); ++j) {
        const json& part = (*c)[j];
        std::string pp = cat(p, ".content[", j, "]");
        if (!part.is_object()) throw wrong_type(pp, "an object", part);
        auto type = get_string(part, "type", pp + ".type");
        if (!type || *type != "text")
          throw invalid_param(pp + ".type", cat("'", pp, ".type' must be 'text' (this model reads text only)"));
        auto text = get_string(part, "text", pp + ".text");
        if (!text) throw invalid_param(pp + ".text", cat("'", pp, ".text' is required"), "missing_required_parameter");
        if (j > 0) content += "\n";
        content += *text;
      }
    } else {
      throw wrong_type(p + ".content", "a string or an array of text parts", *c);
    }
    json nm = {{"role", *role}, {"content", content}};
    if (auto name = get_string(m, "name", p + ".name")) nm["name"] = *name;
    normalise_tool_fields(m, p, *role, nm);  // tool_calls, tool_call_id (tools.h)
    out.push_back(std::move(nm));
  }
  return out;
}

// Every top-level field the OpenAI routes know. Anything else gets a 400 naming it: a field moe does not
// implement is never dropped silently (a client must not believe, say, a constraint is applied when it is
// not). The fields marked "no effect" are accepted because on a single-engine server they cannot change
// the output (see request.h's table).
const std::vector<std::string>& known_fields(bool chat) {
  static const std::vector<std::string> common = {
      "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
      "repetition_penalty", "seed", "stop", "n", "stream", "stream_options", "logprobs", "response_format",
      "ignore_eos", "moe", "user", "logit_bias", "grammar", "guided_json", "guided_regex", "guided_choice",
      "guided_grammar", "metadata", "store", "service_tier"};
  static const std::vector<std::string> chat_only = {"messages", "max_completion_tokens", "top_logprobs", "tools",
                                                     "tool_choice", "parallel_tool_calls", "functions", "function_call"};
  static const std::vector<std::string> completion_only = {"prompt", "echo", "suffix", "best_of"};
  static const std::vector<std::string> chat_fields = [] {
    std::vector<std::string> v = common;
    v.insert(v.end(), chat_only.begin(), chat_only.end());
    return v;
  }();
  static const std::vector<std::string> completion_fields = [] {
    std::vector<std::string> v = common;
    v.insert(v.end(), completion_only.begin(), completion_only.end());
    return v;
  }();
  return chat ? chat_fields : completion_fields;
}

void refuse_unknown(const json& body, bool chat) {
  const auto& known = known_fields(chat);
  for (const auto& [key, value] : body.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      throw invalid_param(key, cat("'", key, "' is not supported by this server"), "unsupported_parameter");
}

void refuse_unsupported(const json& body, bool chat) {
  refuse_unknown(body, chat);
  if (!chat) {
    if (!get_string(body, "suffix", "suffix").value_or("").empty())
      throw invalid_param("suffix", "'suffix' is not supported", "unsupported_parameter");
  }
  if (const json* v = field(body, "service_tier")) {
    if (!v->is_string()) throw wrong_type("service_tier", "a string", *v);
  }
  if (const json* v = field(body, "store")) {
    if (!v->is_boolean()) throw wrong_type("store", "a boolean", *v);
    if (v->get<bool>()) throw invalid_param("store", "'store': true (stored completions) is not supported", "unsupported_parameter");
  }
  if (const json* v = field(body, "metadata"))
    if (!v->is_object()) throw wrong_type("metadata", "an object", *v);
}

// OpenAI's logit_bias: {"token id": bias in [-100, 100]}. Ids are checked against the vocabulary by the
// engine (its error names logit_bias).
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body) {
  std::vector<std::pair<int32_t, float>> out;
  const json* v = field(body, "logit_bias");
  if (!v) return out;
  if (!v->is_object()) throw wrong_type("logit_bias", "an object", *v);
  if (v->size() > 1024) throw invalid_param("logit_bias", "'logit_bias' may have at most 1024 entries");
  for (const auto& [key, bias] : v->items()) {
    const std::string param = "logit_bias." + key;
    char* end = nullptr;
    long long id = key.empty() ? -1 : std::strtoll(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || id < 0 || id > std::numeric_limits<int32_t>::max())
      throw invalid_param(param, cat("'logit_bias' keys must be token ids (non-negative integers), got '", key, "'"));
    if (!bias.is_number()) throw wrong_type(param, "a number", bias);
    double b = bias.get<double>();
    if (!(b >= -100.0 && b <= 100.0)) throw invalid_param(param, cat("'", param, "' must be between -100 and 100, got ", bias.dump()));
    out.push_back({static_cast<int32_t>(id), static_cast<float>(b)});
  }
  return out;
}

// Parses JSON text into J (json, keys sorted, or ordered_json, keys as sent) after util/json_limits'
// linear pre-scan has checked the depth without building anything, so text nested millions deep is
// refused before a value exists (a 6 MB one cost ~200 MB when parsed). Not nlohmann's parser callback:
// with one, a body holding an object of 60,000 keys took 7.8 s to parse instead of 20 ms (measured).
// Errors are 400s naming `param`.
template <class J>
J parse_depth_bounded(std::string_view text, const std::string& subject, const std::string& param) {
  util::JsonLimits limits;
  limits.max_bytes = text.size();  // the size is bounded by the HTTP layer's body limits, per route
  limits.max_depth = bounds::kMaxJsonDepth;
  try {
    util::check_json_limits(text, limits, subject);
  } catch (const Error&) {
    throw ApiError(400, cat(subject, " nests arrays and objects more than ", bounds::kMaxJsonDepth, " levels deep"),
                   param, "invalid_request_error", "invalid_json");
  }
  try {
    return J::parse(text.begin(), text.end());
  } catch (const typename J::exception& e) {
    throw ApiError(400, cat(subject, " is not valid JSON: ", e.what()), param, "invalid_request_error", "invalid_json");
  }
}

// The member `key` of an ordered body's object, or null (also when `o` is null or not an object).
const ordered_json* ordered_field(const ordered_json* o, const char* key) {
  if (!o || !o->is_object()) return nullptr;
  auto it = o->find(key);
  return it == o->end() ? nullptr : &*it;
}

// A grammar-compile failure as a 400 naming the request field (and the schema keyword, if any).
[[noreturn]] void grammar_error(const std::string& param, const grammar::GrammarError& e) {
  std::string msg = cat("'", param, "': ", e.what());
  throw invalid_param(param, msg, "invalid_grammar");
}

// The output constraint: at most one of grammar, guided_*, response_format json_object / json_schema.
// `in_order` is the same body with its keys as sent (or null): a JSON Schema is compiled from it, so the
// grammar writes properties in the schema's order (`body`'s keys are sorted); it is checked on `body`.
void parse_constraint(const json& body, engine::SamplingParams& s, const ordered_json* in_order) {
  std::vector<std::string> given;
  auto compile = [&](const std::string& param, const std::string& gbnf) {
    try {
      s.grammar = grammar::compile_gbnf(gbnf);
    } catch (const grammar::GrammarError& e) {
      grammar_error(param, e);
    }
  };
  auto schema_grammar = [&](const std::string& param, const json& schema, const ordered_json* schema_in_order) {
    if (!schema.is_object() && !schema.is_boolean()) throw wrong_type(param, "a JSON schema (an object)", schema);
    try {
      s.grammar = grammar::compile_gbnf(
          grammar::json_schema_to_gbnf(schema_in_order ? *schema_in_order : ordered_json(schema)));
    } catch (const grammar::GrammarError& e) {
      grammar_error(param, e);
    }
  };
  for (const char* key : {"grammar", "guided_grammar"}) {
    if (const json* v = field(body, key)) {
      if (!v->is_string()) throw wrong_type(key, "a string (GBNF)", *v);
      given.push_back(key);
      compile(key, v->get<std::string>());
    }
  }
  if (const json* v = field(body, "guided_json")) {
    given.push_back("guided_json");
    if (v->is_string()) {  // a schema as text: parsed in its own key order, under the body's depth bound
      ordered_json schema =
          parse_depth_bounded<ordered_json>(v->get<std::string>(), "'guided_json' (a string)", "guided_json");
      schema_grammar("guided_json", json(schema), &schema);
    } else {
      schema_grammar("guided_json", *v, ordered_field(in_order, "guided_json"));
    }
  }
  if (const json* v = field(body, "guided_regex")) {
    if (!v->is_string()) throw wrong_type("guided_regex", "a string", *v);
    given.push_back("guided_regex");
    try {
      s.grammar = grammar::compile_gbnf(grammar::regex_to_gbnf(v->get<std::string>()));
    } catch (const grammar::GrammarError& e) {
      grammar_error("guided_regex", e);
    }
  }
  if (const json* v = field(body, "guided_choice")) {
    if (!v->is_array() || v->empty()) throw wrong_type("guided_choice", "a non-empty array of strings", *v);
    if (v->size() > 4096) throw invalid_param("guided_choice", "'guided_choice' may have at most 4096 choices");
    std::vector<std::string> choices;
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) throw wrong_type(cat("guided_choice[", i, "]"), "a string", (*v)[i]);
      choices.push_back((*v)[i].get<std::string>());
    }
    given.push_back("guided_choice");
    try {
      s.grammar = grammar::compile_gbnf(grammar::choice_to_gbnf(choices));
    } catch (const grammar::GrammarError& e) {
      grammar_error("guided_choice", e);
    }
  }
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object()) throw wrong_type("response_format", "an object", *rf);
    auto type = get_string(*rf, "type", "response_format.type");
    if (!type)
      throw invalid_param("response_format.type", "'response_format.type' is required", "missing_required_parameter");
    if (*type == "json_object") {
      s.json_object = true;
      given.push_back("response_format");
    } else if (*type == "json_schema") {
      const json* js = field(*rf, "json_schema");
      if (!js) throw invalid_param("response_format.json_schema", "'response_format.json_schema' is required", "missing_required_parameter");
      if (!js->is_object()) throw wrong_type("response_format.json_schema", "an object", *js);
      for (const auto& [key, value] : js->items())
        if (key != "name" && key != "schema" && key != "strict" && key != "description")
          throw invalid_param("response_format.json_schema." + key, cat("unknown field 'response_format.json_schema.", key, "'"));
      get_string(*js, "name", "response_format.json_schema.name");
      get_string(*js, "description", "response_format.json_schema.description");
      get_bool(*js, "strict", "response_format.json_schema.strict");  // the schema is always enforced
      const json* schema = field(*js, "schema");
      given.push_back("response_format");
      // No schema: any JSON value (OpenAI's default for a json_schema without one is an object).
      const ordered_json* schema_in_order =
          ordered_field(ordered_field(ordered_field(in_order, "response_format"), "json_schema"), "schema");
      schema_grammar("response_format.json_schema.schema", schema ? *schema : json{{"type", "object"}},
                     schema ? schema_in_order : nullptr);
    } else if (*type != "text") {
      throw invalid_param("response_format.type",
                          cat("'response_format.type' must be 'text', 'json_object' or 'json_schema', got '", *type, "'"));
    }
  }
  if (given.size() > 1)
    throw invalid_param(given[1], cat("'", given[0], "' and '", given[1], "' both constrain the output; give one"));
}

GenerationParams parse_generation(const json& body, bool chat, const ordered_json* in_order) {
  refuse_unsupported(body, chat);
  GenerationParams g;
  g.model = get_model(body);
  constexpr int64_t kIntMax = std::numeric_limits<int64_t>::max();
  auto max_tokens = get_int(body, "max_tokens", "max_tokens", 1, kIntMax);
  if (chat) {
    if (auto mct = get_int(body, "max_completion_tokens", "max_completion_tokens", 1, kIntMax)) max_tokens = mct;
  }
  g.max_tokens = max_tokens;

  auto& s = g.sampling;
  if (auto t = get_number(body, "temperature", "temperature", 0.0, bounds::kMaxTemperature)) s.temperature = float(*t);
  // (0, x] bounds are checked again after the conversion to float, where a tiny positive double is 0.
  if (auto v = get_number(body, "top_p", "top_p", 0.0, 1.0, /*lo_open=*/true)) {
    s.top_p = float(*v);
    if (s.top_p <= 0.0f) throw invalid_param("top_p", cat("'top_p' must be in (0, 1], got ", *v));
  }
  if (auto v = get_int(body, "top_k", "top_k", -1, std::numeric_limits<int32_t>::max())) s.top_k = int32_t(std::max<int64_t>(*v, 0));
  if (auto v = get_number(body, "min_p", "min_p", 0.0, 1.0)) s.min_p = float(*v);
  if (auto v = get_number(body, "presence_penalty", "presence_penalty", -bounds::kMaxPenalty, bounds::kMaxPenalty))
    s.presence_penalty = float(*v);
  if (auto v = get_number(body, "frequency_penalty", "frequency_penalty", -bounds::kMaxPenalty, bounds::kMaxPenalty))
    s.frequency_penalty = float(*v);
  if (auto v = get_number(body, "repetition_penalty", "repetition_penalty", 0.0, bounds::kMaxRepetitionPenalty, true)) {
    s.repetition_penalty = float(*v);
    if (s.repetition_penalty <= 0.0f)
      throw invalid_param("repetition_penalty", cat("'repetition_penalty' must be in (0, 10], got ", *v));
  }
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer()) throw wrong_type("seed", "an integer", *v);
    s.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }

  if (const json* v = field(body, "stop")) {
    if (v->is_string()) {
      g.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > bounds::kMaxStop)
        throw invalid_param("stop", cat("'stop' has ", v->size(), " entries; at most ", bounds::kMaxStop, " are allowed"));
      for (size_t i = 0; i < v->size(); ++i) {
        const json& e = (*v)[i];
        if (!e.is_string()) throw wrong_type(cat("stop[", i, "]"), "a string", e);
        g.stop.push_back(e.get<std::string>());
      }
    } else {
      throw wrong_type("stop", "a string or an array of strings", *v);
    }
    for (const auto& st : g.stop)
      if (st.empty() || st.size() > bounds::kMaxStopBytes)
        throw invalid_param("stop", cat("each stop sequence must be 1 to ", bounds::kMaxStopBytes, " bytes long"));
  }

  g.n = int(get_int(body, "n", "n", 1, bounds::kMaxN).value_or(1));
  if (!chat) {
    if (auto best_of = get_int(body, "best_of", "best_of", 1, bounds::kMaxN); best_of && *best_of > g.n)
      throw invalid_param("best_of", "'best_of' greater than 'n' is not supported", "unsupported_parameter");
  }
  g.stream = get_bool(body, "stream", "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw wrong_type("stream_options", "an object", *so);
    g.include_usage = get_bool(*so, "include_usage", "stream_options.include_usage").value_or(false);
  }

  if (chat) {
    g.logprobs = get_bool(body, "logprobs", "logprobs").value_or(false);
    auto top = get_int(body, "top_logprobs", "top_logprobs", 0, bounds::kMaxChatTopLogprobs);
    if (top && *top > 0 && !g.logprobs)
      throw invalid_param("top_logprobs", "'top_logprobs' needs 'logprobs' to be true");
    g.top_logprobs = int(top.value_or(0));
  } else {
    // Completions: logprobs is the number of alternatives, 0 for the chosen token's alone.
    if (const json* v = field(body, "logprobs")) {
      if (v->is_boolean()) throw wrong_type("logprobs", "an integer", *v);
      g.logprobs = true;
      g.top_logprobs = int(as_int(*v, "logprobs", 0, bounds::kMaxCompletionLogprobs));
    }
  }
  s.top_logprobs = g.logprobs ? g.top_logprobs : -1;

  parse_constraint(body, s, in_order);
  s.logit_bias = parse_logit_bias(body);
  if (!chat) {
    g.echo = get_bool(body, "echo", "echo").value_or(false);
    if (g.echo && g.logprobs)
      throw invalid_param("echo", "'echo' together with 'logprobs' is not supported (prompt logprobs are not computed)",
                          "unsupported_parameter");
  }
  g.ignore_eos = get_bool(body, "ignore_eos", "ignore_eos").value_or(false);
  g.routing_trace = parse_routing_trace(body);
  return g;
}

}  // namespace

bool parse_routing_trace(const json& body) {
  const json* m = field(body, "moe");
  if (!m) return false;
  if (!m->is_object()) throw wrong_type("moe", "an object", *m);
  for (const auto& [key, value] : m->items())
    if (key != "routing") throw invalid_param("moe." + key, cat("unknown field 'moe.", key, "' (known: routing)"));
  return get_bool(*m, "routing", "moe.routing").value_or(false);
}

json parse_body(std::string_view body) {
  json j = parse_depth_bounded<json>(body, "the request body", "");
  if (!j.is_object())
    throw ApiError(400, cat("the request body must be a JSON object, got ", json_type_name(j)), "",
                   "invalid_request_error", "invalid_json");
  return j;
}

bool has_json_schema(const json& body) {
  if (!body.is_object()) return false;
  if (body.contains("guided_json")) return true;
  auto rf = body.find("response_format");
  return rf != body.end() && rf->is_object() && rf->contains("json_schema");
}

ordered_json parse_body_ordered(std::string_view body) {
  return parse_depth_bounded<ordered_json>(body, "the request body", "");
}

ChatRequest parse_chat_request(const json& body, const ordered_json* in_order) {
  ChatRequest r;
  r.messages = normalise_messages(body);
  r.gen = parse_generation(body, /*chat=*/true, in_order);
  // The tool fields only (the messages can be megabytes): key order is lost here; a caller that renders
  // the tools byte-exactly parses them again from the body text (server.cpp).
  nlohmann::ordered_json tool_fields = nlohmann::ordered_json::object();
  for (const char* key : {"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"})
    if (auto it = body.find(key); it != body.end()) tool_fields[key] = *it;
  r.tools = parse_openai_tools(tool_fields);
  return r;
}

CompletionRequest parse_completion_request(const json& body, int32_t n_vocab, const ordered_json* in_order) {
  CompletionRequest r;
  const json* p = field(body, "prompt");
  if (!p) throw invalid_param("prompt", "'prompt' is required", "missing_required_parameter");
  r.prompts = parse_prompts(*p, "prompt", n_vocab, bounds::kMaxPrompts);
  r.gen = parse_generation(body, /*chat=*/false, in_order);
  if (r.prompts.size() * size_t(r.gen.n) > bounds::kMaxChoices)
    throw invalid_param("n", cat(r.prompts.size(), " prompts × n = ", r.gen.n, " asks for ",
                                 r.prompts.size() * size_t(r.gen.n), " choices; at most ", bounds::kMaxChoices,
                                 " are allowed"));
  return r;
}

ChatRequest parse_chat_request_text(std::string_view text) {
  const json body = parse_body(text);
  if (!has_json_schema(body)) return parse_chat_request(body);
  const ordered_json in_order = parse_body_ordered(text);
  return parse_chat_request(body, &in_order);
}

CompletionRequest parse_completion_request_text(std::string_view text, int32_t n_vocab) {
  const json body = parse_body(text);
  if (!has_json_schema(body)) return parse_completion_request(body, n_vocab);
  const ordered_json in_order = parse_body_ordered(text);
  return parse_completion_request(body, n_vocab, &in_order);
}

EmbeddingRequest parse_embedding_request(const json& body, int32_t n_vocab) {
  EmbeddingRequest r;
  r.model = get_model(body);
  const json* in = field(body, "input");
  if (!in) throw invalid_param("input", "'input' is required", "missing_required_parameter");
  r.inputs = parse_prompts(*in, "input", n_vocab, bounds::kMaxEmbeddingInputs);
  if (auto fmt = get_string(body, "encoding_format", "encoding_format")) {
    if (*fmt == "base64") r.base64 = true;
    else if (*fmt != "float")
      throw invalid_param("encoding_format", cat("'encoding_format' must be 'float' or 'base64', got '", *fmt, "'"));
  }
  r.dimensions = get_int(body, "dimensions", "dimensions", 1, std::numeric_limits<int64_t>::max());
  return r;
}

TokenizeRequest parse_tokenize_request(const json& body) {
  TokenizeRequest r;
  r.model = get_model(body);
  r.add_special_tokens = get_bool(body, "add_special_tokens", "add_special_tokens").value_or(true);
  if (field(body, "messages")) {
    r.is_chat = true;
    r.messages = normalise_messages(body);
    return r;
  }
  for (const char* key : {"prompt", "content"}) {
    if (auto text = get_string(body, key, key)) {
      r.text = *text;
      return r;
    }
  }
  throw invalid_param("prompt", "'prompt' (or 'content', or 'messages') is required", "missing_required_parameter");
}

DetokenizeRequest parse_detokenize_request(const json& body, int32_t n_vocab) {
  DetokenizeRequest r;
  r.model = get_model(body);
  const json* t = field(body, "tokens");
  if (!t) throw invalid_param("tokens", "'tokens' is required", "missing_required_parameter");
  if (!t->is_array()) throw wrong_type("tokens", "an array of token ids", *t);
  r.tokens = parse_token_ids(*t, "tokens", n_vocab);
  return r;
}

}  // namespace moe::server

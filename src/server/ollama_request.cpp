// ollama_request.cpp: validation of the Ollama request bodies (see ollama_request.h for what is
// honoured and what is refused). A JSON null counts as absent, as in request.cpp.
#include "server/ollama_request.h"

#include <cmath>
#include <limits>

#include "grammar/grammar.h"
#include "util/error.h"

namespace moe::server::ollama {

std::shared_ptr<const grammar::Grammar> format_grammar(const nlohmann::ordered_json& schema) {
  try {
    return grammar::compile_gbnf(grammar::json_schema_to_gbnf(schema));
  } catch (const grammar::GrammarError& e) {
    throw invalid_param("format", cat("'format': this JSON schema cannot be enforced",
                                      e.keyword.empty() ? "" : cat(" (keyword '", e.keyword, "')"), ": ", e.what()));
  }
}

using nlohmann::json;

namespace {

ApiError bad(const std::string& field, const std::string& message) { return invalid_param(field, message); }

const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

ApiError wrong_type(const std::string& name, const char* expected) {
  return bad(name, cat("'", name, "' must be ", expected));
}

std::optional<std::string> get_string(const json& body, const char* key, const std::string& name) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(name, "a string");
  return v->get<std::string>();
}

std::optional<bool> get_bool(const json& body, const char* key, const std::string& name) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(name, "a boolean");
  return v->get<bool>();
}

std::optional<double> get_number(const json& body, const char* key, const std::string& name, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw wrong_type(name, "a number");
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) throw bad(name, cat("'", name, "' must be in [", lo, ", ", hi, "], got ", d));
  return d;
}

std::optional<int64_t> get_int(const json& body, const char* key, const std::string& name, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  // Clients written in JavaScript may send 128.0 for 128: whole numbers are accepted.
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (!std::isfinite(d) || std::floor(d) != d || d < double(lo) || d > double(hi))
      throw bad(name, cat("'", name, "' must be an integer in [", lo, ", ", hi, "]"));
    return int64_t(d);
  }
  if (!v->is_number_integer()) throw wrong_type(name, "an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw bad(name, cat("'", name, "' must be an integer in [", lo, ", ", hi, "]"));
  int64_t i = v->get<int64_t>();
  if (i < lo || i > hi) throw bad(name, cat("'", name, "' must be an integer in [", lo, ", ", hi, "], got ", i));
  return i;
}

std::string require_model(const json& body) {
  auto m = get_string(body, "model", "model");
  if (!m || m->empty()) throw bad("model", "model is required");
  return *m;
}

void refuse_images(const json& holder, const std::string& name) {
  if (const json* v = field(holder, "images")) {
    if (!v->is_array()) throw wrong_type(name, "an array of base64 images");
    if (!v->empty())
      throw bad(name, cat("'", name, "': this model reads text only; images are not supported"));
  }
}

Options parse_options(const json& body) {
  Options o;
  o.sampling.temperature = 0.8f;  // Ollama's default
  const json* opts = field(body, "options");
  if (!opts) return o;
  if (!opts->is_object()) throw wrong_type("options", "an object");
  auto& s = o.sampling;
  if (auto v = get_number(*opts, "temperature", "options.temperature", 0.0, 2.0)) s.temperature = float(*v);
  if (auto v = get_int(*opts, "top_k", "options.top_k", 0, std::numeric_limits<int32_t>::max())) s.top_k = int32_t(*v);
  if (auto v = get_number(*opts, "top_p", "options.top_p", 0.0, 1.0)) {
    if (*v <= 0) throw bad("options.top_p", "'options.top_p' must be in (0, 1]");
    s.top_p = float(*v);
  }
  if (auto v = get_number(*opts, "min_p", "options.min_p", 0.0, 1.0)) s.min_p = float(*v);
  if (const json* v = field(*opts, "seed")) {
    if (!v->is_number_integer()) throw wrong_type("options.seed", "an integer");
    // Ollama treats a negative seed as "random".
    if (v->is_number_unsigned() || v->get<int64_t>() >= 0) s.seed = v->get<uint64_t>();
  }
  if (auto v = get_int(*opts, "num_predict", "options.num_predict", -2, std::numeric_limits<int64_t>::max())) {
    if (*v == 0) throw bad("options.num_predict", "'options.num_predict' must be positive, or -1 / -2 for no limit");
    if (*v > 0) o.num_predict = *v;
  }
  if (auto v = get_int(*opts, "num_ctx", "options.num_ctx", 1, std::numeric_limits<int64_t>::max())) o.num_ctx = *v;
  if (auto v = get_number(*opts, "repeat_penalty", "options.repeat_penalty", 0.0, bounds::kMaxRepetitionPenalty)) {
    if (*v <= 0) throw bad("options.repeat_penalty", "'options.repeat_penalty' must be in (0, 10]");
    s.repetition_penalty = float(*v);
  }
  if (auto v = get_int(*opts, "repeat_last_n", "options.repeat_last_n", -1, std::numeric_limits<int32_t>::max()))
    s.repeat_last_n = int32_t(*v);
  if (auto v = get_number(*opts, "presence_penalty", "options.presence_penalty", -2.0, 2.0)) s.presence_penalty = float(*v);
  if (auto v = get_number(*opts, "frequency_penalty", "options.frequency_penalty", -2.0, 2.0))
    s.frequency_penalty = float(*v);
  if (const json* v = field(*opts, "stop")) {
    if (v->is_string()) {
      o.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > kMaxStop) throw bad("options.stop", cat("'options.stop' has ", v->size(), " entries; at most ", kMaxStop));
      for (const auto& e : *v) {
        if (!e.is_string()) throw wrong_type("options.stop", "an array of strings");
        o.stop.push_back(e.get<std::string>());
      }
    } else {
      throw wrong_type("options.stop", "an array of strings");
    }
    for (const auto& st : o.stop)
      if (st.empty() || st.size() > bounds::kMaxStopBytes)
        throw bad("options.stop", cat("each stop sequence must be 1 to ", bounds::kMaxStopBytes, " bytes long"));
  }
  // Samplers moe does not have: refused when they would change the answer.
  if (auto v = get_int(*opts, "mirostat", "options.mirostat", 0, 2); v && *v != 0)
    throw bad("options.mirostat", "'options.mirostat' is not supported (only 0, off)");
  if (auto v = get_number(*opts, "tfs_z", "options.tfs_z", 0.0, 1e9); v && *v != 1.0)
    throw bad("options.tfs_z", "'options.tfs_z' is not supported (only 1, off)");
  if (auto v = get_number(*opts, "typical_p", "options.typical_p", 0.0, 1.0); v && *v != 1.0)
    throw bad("options.typical_p", "'options.typical_p' is not supported (only 1, off)");
  // The rest (num_gpu, num_thread, num_batch, use_mmap, ... which tune the runtime, not the answer, and
  // keys Ollama does not know either) are ignored, as Ollama does.
  return o;
}

// "format": "json", "", or a JSON schema, which the grammar engine compiles (grammar/grammar.h): the
// reply is constrained to it while sampling. A schema it cannot enforce exactly is refused, naming the
// keyword, never half-honoured.
void parse_format(const json& body, engine::SamplingParams& sampling) {
  const json* f = field(body, "format");
  if (!f) return;
  if (f->is_string()) {
    std::string s = f->get<std::string>();
    if (s.empty()) return;
    if (s == "json") {
      sampling.json_object = true;
      return;
    }
    throw bad("format", cat("'format' must be \"json\" or a JSON schema, got \"", s, "\""));
  }
  if (!f->is_object()) throw wrong_type("format", "\"json\" or a JSON schema object");
  sampling.grammar = format_grammar(nlohmann::ordered_json(*f));
}

void common(const json& body, bool& stream, bool& routing, Options& opts) {
  stream = get_bool(body, "stream", "stream").value_or(true);
  routing = parse_routing_trace(body);
  opts = parse_options(body);
  parse_format(body, opts.sampling);
  if (get_bool(body, "think", "think").value_or(false))
    throw bad("think", "'think' is not supported: this model has no separate thinking output");
  if (const json* k = field(body, "keep_alive"))  // accepted: the model stays loaded while moe serves
    if (!k->is_string() && !k->is_number()) throw wrong_type("keep_alive", "a duration string or a number of seconds");
}

}  // namespace

GenerateRequest parse_generate(const json& body, int32_t n_vocab) {
  GenerateRequest r;
  r.model = require_model(body);
  r.prompt = get_string(body, "prompt", "prompt").value_or("");
  r.system = get_string(body, "system", "system");
  r.template_text = get_string(body, "template", "template");
  if (r.template_text && r.template_text->empty()) r.template_text.reset();
  r.raw = get_bool(body, "raw", "raw").value_or(false);
  if (!get_string(body, "suffix", "suffix").value_or("").empty())
    throw bad("suffix", "'suffix' (fill-in-the-middle) is not supported");
  refuse_images(body, "images");
  if (const json* c = field(body, "context")) {
    if (!c->is_array()) throw wrong_type("context", "an array of token ids");
    for (size_t i = 0; i < c->size(); ++i) {
      const json& t = (*c)[i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= n_vocab)
        throw bad("context", cat("'context[", i, "]' must be a token id in [0, ", n_vocab, ")"));
      r.context.push_back(t.get<int32_t>());
    }
  }
  common(body, r.stream, r.routing_trace, r.options);
  return r;
}

ChatRequest parse_chat(const json& body) {
  ChatRequest r;
  r.model = require_model(body);
  if (auto it = body.find("tools"); it != body.end() && !it->is_null())
    r.tools = parse_ollama_tools(nlohmann::ordered_json{{"tools", *it}});
  r.messages = json::array();
  if (const json* msgs = field(body, "messages")) {
    if (!msgs->is_array()) throw wrong_type("messages", "an array");
    if (msgs->size() > bounds::kMaxMessages)
      throw bad("messages", cat("'messages' has ", msgs->size(), " messages; at most ", bounds::kMaxMessages));
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      std::string p = cat("messages[", i, "]");
      if (!m.is_object()) throw wrong_type(p, "an object");
      auto role = get_string(m, "role", p + ".role");
      if (!role) throw bad(p + ".role", cat("'", p, ".role' is required"));
      if (*role != "system" && *role != "user" && *role != "assistant" && *role != "tool")
        throw bad(p + ".role", cat("'", p, ".role' must be system, user, assistant or tool; got '", *role, "'"));
      refuse_images(m, p + ".images");
      std::string content = get_string(m, "content", p + ".content").value_or("");
      json nm = {{"role", *role}, {"content", content}};
      normalise_tool_fields(m, p, *role, nm);  // tool_calls, tool_name (tools.h)
      r.messages.push_back(std::move(nm));
    }
  }
  common(body, r.stream, r.routing_trace, r.options);
  return r;
}

EmbedRequest parse_embed(const json& body) {
  EmbedRequest r;
  r.model = require_model(body);
  const json* in = field(body, "input");
  if (!in) throw bad("input", "input is required");
  if (in->is_string()) {
    r.inputs.push_back(in->get<std::string>());
  } else if (in->is_array()) {
    if (in->empty()) throw bad("input", "'input' must not be empty");
    if (in->size() > kMaxEmbedInputs) throw bad("input", cat("'input' has ", in->size(), " entries; at most ", kMaxEmbedInputs));
    for (const auto& e : *in) {
      if (!e.is_string()) throw wrong_type("input", "a string or an array of strings");
      r.inputs.push_back(e.get<std::string>());
    }
  } else {
    throw wrong_type("input", "a string or an array of strings");
  }
  r.truncate = get_bool(body, "truncate", "truncate").value_or(true);
  r.dimensions = get_int(body, "dimensions", "dimensions", 1, std::numeric_limits<int32_t>::max());
  return r;
}

EmbedRequest parse_embeddings(const json& body) {
  EmbedRequest r;
  r.model = require_model(body);
  r.inputs.push_back(get_string(body, "prompt", "prompt").value_or(""));
  return r;
}

std::string parse_show(const json& body) {
  auto m = get_string(body, "model", "model");
  if (!m || m->empty()) m = get_string(body, "name", "name");
  if (!m || m->empty()) throw bad("model", "model is required");
  return *m;
}

// The subset: actions {{ .System }}, {{ .Prompt }}, {{ .Response }}, {{ if .X }}, {{ else }}, {{ end }},
// comments {{/* */}}, and "{{-" / "-}}" trimming the whitespace beside them. Conditions test that the
// variable is non-empty. Anything else (range, template, function calls) is refused by name.
std::string render_go_template(const std::string& tmpl, const std::string& system, const std::string& prompt) {
  auto var = [&](const std::string& name) -> const std::string* {
    static const std::string empty;
    if (name == ".System") return &system;
    if (name == ".Prompt") return &prompt;
    if (name == ".Response") return &empty;
    return nullptr;
  };
  auto trim = [](std::string s) {
    size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::string out;
  std::vector<std::pair<bool, bool>> stack;  // per open if: (condition, in else branch)
  auto emitting = [&] {
    for (auto [cond, in_else] : stack)
      if (cond == in_else) return false;
    return true;
  };
  size_t i = 0;
  while (i < tmpl.size()) {
    size_t open = tmpl.find("{{", i);
    std::string text = tmpl.substr(i, open == std::string::npos ? std::string::npos : open - i);
    if (open == std::string::npos) {
      if (emitting()) out += text;
      break;
    }
    size_t close = tmpl.find("}}", open + 2);
    if (close == std::string::npos) throw bad("template", "'template': an action '{{' is not closed by '}}'");
    std::string action = tmpl.substr(open + 2, close - open - 2);
    bool trim_left = !action.empty() && action[0] == '-';
    bool trim_right = !action.empty() && action.back() == '-';
    if (trim_left) {
      action.erase(0, 1);
      size_t keep = text.find_last_not_of(" \t\r\n");
      text = keep == std::string::npos ? std::string() : text.substr(0, keep + 1);
    }
    if (trim_right) action.pop_back();
    if (emitting()) out += text;
    action = trim(action);
    i = close + 2;
    if (trim_right) {
      while (i < tmpl.size() && std::string(" \t\r\n").find(tmpl[i]) != std::string::npos) ++i;
    }
    if (action.starts_with("/*")) continue;
    if (action.starts_with("if ")) {
      const std::string* v = var(trim(action.substr(3)));
      if (!v) throw bad("template", cat("'template': the condition '", action, "' is not supported (only .System, .Prompt, .Response)"));
      stack.emplace_back(!v->empty(), false);
    } else if (action == "else") {
      if (stack.empty() || stack.back().second) throw bad("template", "'template': '{{ else }}' without '{{ if }}'");
      stack.back().second = true;
    } else if (action == "end") {
      if (stack.empty()) throw bad("template", "'template': '{{ end }}' without '{{ if }}'");
      stack.pop_back();
    } else if (const std::string* v = var(action)) {
      if (emitting()) out += *v;
    } else {
      throw bad("template", cat("'template': the action '{{ ", action,
                                " }}' is not supported (moe renders .System, .Prompt, .Response, if/else/end)"));
    }
  }
  if (!stack.empty()) throw bad("template", "'template': an '{{ if }}' is not closed by '{{ end }}'");
  return out;
}

}  // namespace moe::server::ollama

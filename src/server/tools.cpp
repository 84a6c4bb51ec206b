// tools.cpp: validation of tool requests and tool messages, format detection, response shapes (see
// tools.h).
#include "server/tools.h"

#include <cctype>
#include <random>

#include "server/backend.h"
#include "server/generation.h"
#include "server/request.h"
#include "server/tool_grammar.h"
#include "util/error.h"

namespace moe::server {

using nlohmann::json;
using nlohmann::ordered_json;

const char* tool_format_name(ToolFormat f) {
  switch (f) {
    case ToolFormat::Hermes: return "hermes";
    case ToolFormat::Mistral: return "mistral";
    case ToolFormat::Llama3: return "llama3";
    case ToolFormat::None: break;
  }
  return "none";
}

ToolFormat detect_tool_format(std::string_view src) {
  auto has = [&](std::string_view s) { return src.find(s) != std::string_view::npos; };
  if (has("[TOOL_CALLS]")) return ToolFormat::Mistral;
  if (has("<tool_call>")) return ToolFormat::Hermes;
  if (has("<|python_tag|>") || (has("<|start_header_id|>") && has("\"parameters\""))) return ToolFormat::Llama3;
  return ToolFormat::None;
}

namespace {

const char* type_name(const ordered_json& v) {
  switch (v.type()) {
    case ordered_json::value_t::null: return "null";
    case ordered_json::value_t::boolean: return "a boolean";
    case ordered_json::value_t::number_integer:
    case ordered_json::value_t::number_unsigned: return "an integer";
    case ordered_json::value_t::number_float: return "a number";
    case ordered_json::value_t::string: return "a string";
    case ordered_json::value_t::array: return "an array";
    case ordered_json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

template <class J>
ApiError wrong(const std::string& param, const char* expected, const J& got) {
  return invalid_param(param, cat("'", param, "' must be ", expected, ", got ", type_name(ordered_json(got))),
                       "invalid_type");
}

template <class J>
const J* field(const J& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool valid_function_name(const std::string& n) {
  if (n.empty() || n.size() > bounds::kMaxToolNameBytes) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

// tools[i]: {"type": "function", "function": {...}}; Ollama clients send the same shape.
void parse_tool(const ordered_json& t, size_t i, ToolRequest& r) {
  const std::string p = cat("tools[", i, "]");
  if (!t.is_object()) throw wrong(p, "an object", t);
  const ordered_json* type = field(t, "type");
  if (!type || !type->is_string() || *type != "function")
    throw invalid_param(p + ".type", cat("'", p, ".type' must be 'function'"));
  const ordered_json* fn = field(t, "function");
  if (!fn) throw invalid_param(p + ".function", cat("'", p, ".function' is required"), "missing_required_parameter");
  if (!fn->is_object()) throw wrong(p + ".function", "an object", *fn);
  const std::string fp = p + ".function";
  const ordered_json* name = field(*fn, "name");
  if (!name) throw invalid_param(fp + ".name", cat("'", fp, ".name' is required"), "missing_required_parameter");
  if (!name->is_string()) throw wrong(fp + ".name", "a string", *name);
  const std::string n = name->get<std::string>();
  if (!valid_function_name(n))
    throw invalid_param(fp + ".name", cat("'", fp, ".name' must be 1 to ", bounds::kMaxToolNameBytes,
                                          " letters, digits, underscores or dashes, got '", n, "'"));
  for (const auto& seen : r.names)
    if (seen == n) throw invalid_param(fp + ".name", cat("two tools are named '", n, "'; names must be unique"));
  if (const ordered_json* d = field(*fn, "description"); d && !d->is_string())
    throw wrong(fp + ".description", "a string", *d);
  if (const ordered_json* s = field(*fn, "strict"); s && !s->is_boolean()) throw wrong(fp + ".strict", "a boolean", *s);
  ordered_json tool = t;
  ordered_json& f = tool["function"];
  const ordered_json* params = field(*fn, "parameters");
  if (!params) {
    // No parameters: a function of no arguments. The templates iterate parameters.properties, so it is
    // written out rather than left absent.
    f["parameters"] = {{"type", "object"}, {"properties", ordered_json::object()}};
  } else {
    const std::string pp = fp + ".parameters";
    if (!params->is_object()) throw wrong(pp, "a JSON Schema object", *params);
    if (const ordered_json* ty = field(*params, "type"); ty && !(ty->is_string() && *ty == "object"))
      throw invalid_param(pp + ".type", cat("'", pp, ".type' must be 'object' (a function's arguments are a JSON object), got ",
                                            ty->dump()));
    if (const ordered_json* pr = field(*params, "properties"); pr && !pr->is_object())
      throw wrong(pp + ".properties", "an object", *pr);
    if (!params->contains("properties")) f["parameters"]["properties"] = ordered_json::object();
    if (!params->contains("type")) f["parameters"]["type"] = "object";
  }
  r.names.push_back(n);
  r.parameters.push_back(f["parameters"]);
  r.tools.push_back(std::move(tool));
}

ToolRequest parse_tool_list(const ordered_json& tools) {
  ToolRequest r;
  if (!tools.is_array()) throw wrong("tools", "an array", tools);
  if (tools.size() > bounds::kMaxTools)
    throw invalid_param("tools", cat("'tools' has ", tools.size(), " tools; at most ", bounds::kMaxTools, " are allowed"));
  for (size_t i = 0; i < tools.size(); ++i) parse_tool(tools[i], i, r);
  return r;
}

}  // namespace

std::optional<ToolRequest> parse_openai_tools(const ordered_json& body) {
  for (const char* legacy : {"functions", "function_call"})
    if (field(body, legacy))
      throw invalid_param(legacy, cat("'", legacy, "' (deprecated) is not supported; send 'tools' and 'tool_choice'"),
                          "unsupported_parameter");
  const ordered_json* tools = field(body, "tools");
  const ordered_json* choice = field(body, "tool_choice");
  const ordered_json* parallel = field(body, "parallel_tool_calls");
  if (parallel && !parallel->is_boolean()) throw wrong("parallel_tool_calls", "a boolean", *parallel);
  if (!tools || (tools->is_array() && tools->empty())) {
    if (choice && !(choice->is_string() && (*choice == "none" || *choice == "auto")))
      throw invalid_param("tool_choice", "'tool_choice' needs 'tools' (only 'none' or 'auto' without tools)");
    return std::nullopt;
  }
  ToolRequest r = parse_tool_list(*tools);
  if (parallel) r.parallel = parallel->get<bool>();
  if (choice) {
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "auto") r.choice = ToolChoice::Auto;
      else if (c == "none") r.choice = ToolChoice::None;
      else if (c == "required") r.choice = ToolChoice::Required;
      else throw invalid_param("tool_choice", cat("'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", "
                                                  "\"function\": {\"name\": …}}, got '", c, "'"));
    } else if (choice->is_object()) {
      const ordered_json* ty = field(*choice, "type");
      if (!ty || !ty->is_string() || *ty != "function")
        throw invalid_param("tool_choice.type", "'tool_choice.type' must be 'function'");
      const ordered_json* fn = field(*choice, "function");
      if (!fn || !fn->is_object())
        throw invalid_param("tool_choice.function", "'tool_choice.function' must be an object with the function's name");
      const ordered_json* name = field(*fn, "name");
      if (!name || !name->is_string())
        throw invalid_param("tool_choice.function.name", "'tool_choice.function.name' must be a string");
      r.named = name->get<std::string>();
      bool known = false;
      for (const auto& n : r.names) known = known || n == r.named;
      if (!known)
        throw invalid_param("tool_choice.function.name",
                            cat("'tool_choice.function.name' is '", r.named, "', which is not one of the tools"));
      r.choice = ToolChoice::Named;
    } else {
      throw wrong("tool_choice", "a string or an object", *choice);
    }
  }
  return r;
}

std::optional<ToolRequest> parse_ollama_tools(const ordered_json& body) {
  const ordered_json* tools = field(body, "tools");
  if (!tools || (tools->is_array() && tools->empty())) return std::nullopt;
  return parse_tool_list(*tools);
}

void normalise_tool_fields(const json& m, const std::string& p, const std::string& role, json& out) {
  if (role == "tool") {
    // OpenAI: tool_call_id (required by its API; some templates render it); Ollama: tool_name.
    for (const char* key : {"tool_call_id", "tool_name"}) {
      if (const json* v = field(m, key)) {
        if (!v->is_string()) throw wrong(p + "." + key, "a string", *v);
        out[key] = *v;
      }
    }
    if (!out.contains("name") && out.contains("tool_name")) out["name"] = out["tool_name"];
    return;
  }
  const json* calls = field(m, "tool_calls");
  if (!calls) return;
  const std::string cp = p + ".tool_calls";
  if (role != "assistant") throw invalid_param(cp, cat("'", cp, "' is only allowed on assistant messages"));
  if (!calls->is_array()) throw wrong(cp, "an array", *calls);
  if (calls->size() > bounds::kMaxToolCallsPerMessage)
    throw invalid_param(cp, cat("'", cp, "' has ", calls->size(), " calls; at most ", bounds::kMaxToolCallsPerMessage,
                                " are allowed"));
  if (calls->empty()) return;  // some clients send [] with a plain answer
  json norm = json::array();
  for (size_t i = 0; i < calls->size(); ++i) {
    const json& c = (*calls)[i];
    const std::string ip = cat(cp, "[", i, "]");
    if (!c.is_object()) throw wrong(ip, "an object", c);
    json nc = json::object();
    if (const json* id = field(c, "id")) {
      if (!id->is_string()) throw wrong(ip + ".id", "a string", *id);
      nc["id"] = *id;
    }
    if (const json* ty = field(c, "type"); ty && !(ty->is_string() && *ty == "function"))
      throw invalid_param(ip + ".type", cat("'", ip, ".type' must be 'function'"));
    nc["type"] = "function";
    const json* fn = field(c, "function");
    if (!fn || !fn->is_object())
      throw invalid_param(ip + ".function", cat("'", ip, ".function' must be an object with name and arguments"));
    const json* name = field(*fn, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty())
      throw invalid_param(ip + ".function.name", cat("'", ip, ".function.name' must be a non-empty string"));
    json args = json::object();
    if (const json* a = field(*fn, "arguments")) {
      if (a->is_string()) {
        // OpenAI sends the arguments as JSON text; the templates write them with tojson, so they are
        // given the object (a text that is not a JSON object is an error the client must hear about).
        try {
          args = json::parse(a->get<std::string>());
        } catch (const json::exception&) {
          throw invalid_param(ip + ".function.arguments", cat("'", ip, ".function.arguments' is not valid JSON"));
        }
        if (!args.is_object())
          throw invalid_param(ip + ".function.arguments", cat("'", ip, ".function.arguments' must encode a JSON object"));
      } else if (a->is_object()) {
        args = *a;
      } else {
        throw wrong(ip + ".function.arguments", "a JSON text of an object, or an object", *a);
      }
    }
    nc["function"] = {{"name", *name}, {"arguments", std::move(args)}};
    norm.push_back(std::move(nc));
  }
  out["tool_calls"] = std::move(norm);
}

std::string new_tool_call_id(ToolFormat f) {
  static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, int(sizeof(kAlnum)) - 2);
  const size_t n = f == ToolFormat::Mistral ? 9 : 24;
  std::string id = f == ToolFormat::Mistral ? "" : "call_";
  for (size_t i = 0; i < n; ++i) id += kAlnum[pick(rng)];
  return id;
}

json openai_tool_calls_json(const std::vector<ToolCall>& calls) {
  json out = json::array();
  for (const auto& c : calls)
    out.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  return out;
}

std::vector<json> openai_tool_call_deltas(const ToolCall& call, int index) {
  std::vector<json> out;
  out.push_back({{"index", index},
                 {"id", call.id},
                 {"type", "function"},
                 {"function", {{"name", call.name}, {"arguments", ""}}}});
  out.push_back({{"index", index}, {"function", {{"arguments", call.arguments}}}});
  return out;
}

json ollama_tool_calls_json(const std::vector<ToolCall>& calls) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    // Ollama's own answers: {"function": {"index", "name", "arguments": {object}}}; arguments keep
    // their order (the parser wrote them compactly from an ordered object).
    ordered_json args = ordered_json::parse(calls[i].arguments);
    out.push_back({{"function", {{"index", i}, {"name", calls[i].name}, {"arguments", json(args)}}}});
  }
  return out;
}

ToolFormat require_tool_format(const Backend& backend, const std::string& param) {
  ToolFormat f = detect_tool_format(backend.chat_template_source());
  if (f == ToolFormat::None)
    throw invalid_param(param,
                        "this model's chat template does not support tools: it teaches no tool-call format moe knows "
                        "(Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS], Llama 3 JSON). Start moe serve with "
                        "--chat-template hermes-tools, qwen, qwen3, mistral-nemo, mistral-small or llama3 (or a "
                        "template file that has tools) to use tools with this model",
                        "tools_unsupported");
  return f;
}

std::vector<int32_t> tool_prompt_ids(const Backend& backend, const json& messages, const ToolRequest& tools,
                                     ChatTools& out, engine::SamplingParams& sampling) {
  out = ChatTools{};
  out.format = require_tool_format(backend, "tools");
  check_tool_schemas(tools);
  if (!tools.active()) return chat_prompt_ids(backend, messages);
  if (tools.constrained()) {
    // One constraint per answer: a forced call cannot also be a response_format / grammar answer.
    if (sampling.grammar || sampling.json_object)
      throw invalid_param("tool_choice", "'tool_choice' 'required' or a named function constrains the answer to a "
                                         "tool call; it cannot be combined with response_format or a grammar");
    sampling.grammar = tool_call_grammar(tools, out.format, backend.chat_template_source());
  }
  out.active = true;
  out.names = tools.names;
  out.max_calls = tools.max_calls();
  try {
    return backend.chat_prompt_with_tools(messages, tools.tools);
  } catch (const moe::Error& e) {
    throw invalid_param("messages", cat("the chat template rejected the messages: ", e.what()), "template_error");
  }
}

}  // namespace moe::server

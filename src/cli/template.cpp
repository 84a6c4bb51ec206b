// template.cpp: `moe template` renders a chat template the way the server will, so a user can see the
// exact prompt a model gets: from a .jinja file, from a model's GGUF metadata (tokenizer.chat_template,
// with its BOS/EOS token texts), or from a named built-in. It prints the prompt byte for byte (no
// added newline) or fails with the template's own error.
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "gguf/gguf.h"
#include "hf/hf.h"
#include "template/chat_template.h"
#include "util/error.h"

namespace moe::cli {
namespace {

struct TemplateOptions {
  std::string template_path;
  std::string model_path;
  std::string messages_path;
  std::string tools_path;
  std::string chat_template_name;
  std::string bos_token, eos_token;
  bool bos_given = false, eos_given = false;
  bool add_generation_prompt = false;
  bool list_builtins = false;
  std::vector<std::string> vars;
  int64_t now_epoch = -1;
};

std::string read_text(const std::string& path, const char* what) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", what, " '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::ordered_json read_json(const std::string& path, const char* what) {
  std::string text = read_text(path, what);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(what, " '", path, "' is not valid JSON: ", e.what());
  }
}

// The token text at the id stored under `id_key`, if the GGUF has both.
std::optional<std::string> token_text(const gguf::File& file, const std::vector<std::string>* tokens,
                                      const char* id_key) {
  auto id = file.get_int(id_key);
  if (!id || !tokens || *id < 0 || static_cast<uint64_t>(*id) >= tokens->size()) return std::nullopt;
  return (*tokens)[static_cast<size_t>(*id)];
}

int run_template(const TemplateOptions& o) {
  if (o.list_builtins) {
    for (const auto& name : tmpl::builtin_template_names()) std::cout << name << "\n";
    return 0;
  }
  if (o.messages_path.empty()) fail("--messages is required (a JSON array of messages, or a request body with \"messages\")");
  if (!o.template_path.empty() && !o.model_path.empty()) fail("give --template or --model, not both");

  std::string source;
  tmpl::RenderOptions opt;
  opt.add_generation_prompt = o.add_generation_prompt;
  auto builtin = [&](const std::string& name) {
    auto text = tmpl::builtin_template(name);
    if (!text) {
      std::string names;
      for (const auto& n : tmpl::builtin_template_names()) names += (names.empty() ? "" : ", ") + n;
      fail("unknown built-in chat template '", name, "' (known: ", names, ")");
    }
    return *text;
  };
  if (!o.template_path.empty()) {
    source = read_text(o.template_path, "template file");
  } else if (!o.model_path.empty()) {
    gguf::File file = hf::open_model_file(o.model_path);
    if (auto t = file.get_string("tokenizer.chat_template")) {
      source = *t;
    } else {
      std::string name = o.chat_template_name.empty() ? "chatml" : o.chat_template_name;
      std::cerr << "moe template: note: " << o.model_path << " has no tokenizer.chat_template; using the built-in '"
                << name << "' template\n";
      source = builtin(name);
    }
    std::optional<std::vector<std::string>> tokens = file.get_string_array("tokenizer.ggml.tokens");
    const std::vector<std::string>* tok = tokens ? &*tokens : nullptr;
    if (auto b = token_text(file, tok, "tokenizer.ggml.bos_token_id")) opt.bos_token = *b;
    if (auto e = token_text(file, tok, "tokenizer.ggml.eos_token_id")) opt.eos_token = *e;
  } else if (!o.chat_template_name.empty()) {
    source = builtin(o.chat_template_name);
  } else {
    fail("give a template: --template FILE.jinja, --model MODEL.gguf or --chat-template NAME");
  }
  if (o.bos_given) opt.bos_token = o.bos_token;
  if (o.eos_given) opt.eos_token = o.eos_token;

  nlohmann::ordered_json input = read_json(o.messages_path, "messages file");
  nlohmann::ordered_json messages = input;
  if (input.is_object()) {
    if (!input.contains("messages")) fail("messages file: an object must have a \"messages\" array");
    messages = input["messages"];
    if (input.contains("tools")) opt.tools = input["tools"];
  }
  if (!messages.is_array()) fail("messages file: expected a JSON array of messages");
  if (!o.tools_path.empty()) opt.tools = read_json(o.tools_path, "tools file");
  for (const auto& v : o.vars) {
    size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) fail("--var expects NAME=JSON, got '", v, "'");
    try {
      opt.extra[v.substr(0, eq)] = nlohmann::ordered_json::parse(v.substr(eq + 1));
    } catch (const nlohmann::json::exception&) {
      opt.extra[v.substr(0, eq)] = v.substr(eq + 1);  // a bare word is a string
    }
  }
  if (o.now_epoch >= 0) opt.now_epoch_seconds = o.now_epoch;

  tmpl::ChatTemplate chat(source);
  std::string prompt = chat.render(messages, opt);
  std::cout.write(prompt.data(), static_cast<std::streamsize>(prompt.size()));
  std::cout.flush();
  return 0;
}

Registrar reg("template", "Render a chat template for a conversation, exactly as the server would", [](CLI::App& sub) {
  auto o = std::make_shared<TemplateOptions>();
  sub.add_option("--template", o->template_path, "Jinja chat template file");
  sub.add_option("--model", o->model_path, "GGUF model whose tokenizer.chat_template (and BOS/EOS texts) to use");
  sub.add_option("--messages", o->messages_path,
                 "JSON file: an array of {role, content} messages, or a request body with \"messages\" (and "
                 "\"tools\"); - reads stdin");
  sub.add_flag("--add-generation-prompt", o->add_generation_prompt, "End with the assistant turn's opening");
  sub.add_option("--tools", o->tools_path, "JSON file with an array of tool definitions");
  sub.add_option("--bos-token", o->bos_token, "BOS text (default: the model's, else <s>)")
      ->each([o](const std::string&) { o->bos_given = true; });
  sub.add_option("--eos-token", o->eos_token, "EOS text (default: the model's, else </s>)")
      ->each([o](const std::string&) { o->eos_given = true; });
  sub.add_option("--chat-template", o->chat_template_name,
                 "Built-in template: alone, or the fallback for a model without one (default chatml)");
  sub.add_option("--var", o->vars, "Extra template variable NAME=JSON (e.g. enable_thinking=false); repeatable");
  sub.add_option("--now", o->now_epoch, "strftime_now's time, seconds since the epoch (default: the clock)");
  sub.add_flag("--list-builtins", o->list_builtins, "Print the built-in template names and exit");
  return [o] { return run_template(*o); };
});

}  // namespace
}  // namespace moe::cli

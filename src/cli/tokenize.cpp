// tokenize.cpp: `moe tokenize FILE` (stdin text → ids) and `moe detokenize FILE` (stdin ids → text), where
// FILE is a GGUF model or a SentencePiece tokenizer.model. They expose the tokenizer to scripts and to the
// end-to-end tests; both subcommands live here because they are two directions of one tool.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "hf/hf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace moe::cli {
namespace {

// A tokenizer file, a GGUF model, or a Hugging Face checkpoint directory (its tokenizer.model with the
// ids and flags of its config files).
tokenizer::Tokenizer load_tokenizer(const std::string& path) {
  if (hf::is_checkpoint_dir(path)) return tokenizer::Tokenizer::from_gguf(hf::open_checkpoint(path));
  return tokenizer::Tokenizer::load(path);
}

struct TokenizeOpts {
  std::string file;
  bool no_bos = false;
  bool json = false;
  bool special = false;
};

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

int run_tokenize(const TokenizeOpts& o) {
  const auto tok = load_tokenizer(model_or_default(o.file));
  const std::string text = read_stdin();
  const auto ids = tok.encode(text, tok.add_bos() && !o.no_bos, o.special);
  std::string out;
  if (o.json) {
    out = nlohmann::json(ids).dump();
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(ids[i]);
    }
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

// Ids separated by whitespace and/or commas, or one JSON array of integers.
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail("input is not a valid JSON array of token ids: ", e.what());
    }
    if (!j.is_array()) fail("input JSON is not an array of token ids");
    for (const auto& v : j) {
      if (!v.is_number_integer()) fail("token id ", v.dump(), " in the JSON array is not an integer");
      const auto x = v.get<int64_t>();
      if (x < INT32_MIN || x > INT32_MAX) fail("token id ", x, " is out of range");
      ids.push_back(static_cast<int32_t>(x));
    }
    return ids;
  }
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(cur, &used);
    } catch (...) {
      used = 0;
    }
    if (used != cur.size() || v < INT32_MIN || v > INT32_MAX) fail("'", cur, "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
    cur.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r') flush();
    else cur += c;
  }
  flush();
  return ids;
}

int run_detokenize(const std::string& file) {
  const auto tok = load_tokenizer(model_or_default(file));
  const std::string text = tok.decode(parse_ids(read_stdin()));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

Registrar tokenize_reg("tokenize", "Read text on stdin, print its token ids", [](CLI::App& sub) {
  auto o = std::make_shared<TokenizeOpts>();
  sub.add_option("file", o->file, "GGUF model or SentencePiece tokenizer.model (default: the bundled model)");
  sub.add_flag("--no-bos", o->no_bos, "do not prepend the BOS token");
  sub.add_flag("--json", o->json, "print one JSON array instead of space-separated ids");
  sub.add_flag("--special", o->special, "control-token texts such as <s> or [INST] become their ids");
  return [o] { return run_tokenize(*o); };
});

Registrar detokenize_reg("detokenize", "Read token ids on stdin (whitespace/comma separated or a JSON array), print the text",
                         [](CLI::App& sub) {
                           auto file = std::make_shared<std::string>();
                           sub.add_option("file", *file, "GGUF model or SentencePiece tokenizer.model (default: the bundled model)");
                           return [file] { return run_detokenize(*file); };
                         });

}  // namespace
}  // namespace moe::cli

// ollama_test.cpp: the Ollama request parsing (ollama_request.h) without a model: options mapped to
// the engine's sampling fields, the format/schema rule, refusals naming their field, and the
// Go-template subset.
#include <gtest/gtest.h>

#include <functional>

#include "server/ollama_request.h"

namespace moe::server::ollama {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(OllamaRequest, OptionsMapToTheEngine) {
  auto r = parse_generate(json::parse(R"({"model": "m", "prompt": "p", "options": {"temperature": 0.5, "top_k": 7,
      "top_p": 0.9, "min_p": 0.1, "seed": 3, "num_predict": 12, "num_ctx": 64, "stop": ["a", "bc"],
      "repeat_penalty": 1.2, "repeat_last_n": 32, "num_gpu": 99, "made_up": 1}})"), 100);
  const auto& s = r.options.sampling;
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_EQ(s.top_k, 7);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_EQ(*s.seed, 3u);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.2f);
  EXPECT_EQ(s.repeat_last_n, 32);
  EXPECT_EQ(*r.options.num_predict, 12);
  EXPECT_EQ(*r.options.num_ctx, 64);
  EXPECT_EQ(r.options.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream);  // Ollama streams unless told not to
  auto d = parse_generate(json::parse(R"({"model": "m", "options": {"num_predict": -1, "seed": -1}})"), 100);
  EXPECT_FLOAT_EQ(d.options.sampling.temperature, 0.8f);  // Ollama's default
  EXPECT_FALSE(d.options.num_predict);
  EXPECT_FALSE(d.options.sampling.seed);
}

TEST(OllamaRequest, FormatJsonAndTheSchemaRule) {
  auto chat = [](const std::string& format) {
    return parse_chat(json::parse(R"({"model": "m", "messages": [], "format": )" + format + "}"));
  };
  EXPECT_TRUE(chat(R"("json")").options.sampling.json_object);
  EXPECT_FALSE(chat(R"("")").options.sampling.json_object);
  EXPECT_FALSE(chat(R"("")").options.sampling.grammar);
  // Any schema the grammar engine compiles is enforced through it.
  EXPECT_TRUE(chat(R"({"type": "object", "title": "T"})").options.sampling.grammar);
  EXPECT_TRUE(chat(R"({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})").options.sampling.grammar);
  EXPECT_TRUE(chat(R"({"type": "array", "items": {"type": "integer"}, "maxItems": 3})").options.sampling.grammar);
  // One it cannot enforce exactly is refused, naming the keyword.
  EXPECT_NE(error_of([&] { chat(R"({"type": "string", "pattern": "(?<=a)b"})"); }).find("'pattern'"), std::string::npos);
  EXPECT_NE(error_of([&] { chat(R"("yaml")"); }).find("'format'"), std::string::npos);
  EXPECT_NE(error_of([&] { chat(R"(5)"); }).find("'format'"), std::string::npos);
}

TEST(OllamaRequest, RefusalsNameTheField) {
  EXPECT_NE(error_of([] { parse_chat(json::parse(R"({"messages": []})")); }).find("model is required"), std::string::npos);
  EXPECT_NE(error_of([] {
              parse_chat(json::parse(R"({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["aa"]}]})"));
            }).find("messages[0].images"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_generate(json::parse(R"({"model": "m", "options": {"mirostat": 1}})"), 10); })
                .find("options.mirostat"), std::string::npos);
  EXPECT_NE(error_of([] { parse_generate(json::parse(R"({"model": "m", "options": {"temperature": "hot"}})"), 10); })
                .find("options.temperature"), std::string::npos);
  EXPECT_NE(error_of([] { parse_generate(json::parse(R"({"model": "m", "context": [5, 10]})"), 10); }).find("context[1]"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_chat(json::parse(R"({"model": "m", "messages": [{"role": "robot", "content": ""}]})")); })
                .find("messages[0].role"), std::string::npos);
  EXPECT_NE(error_of([] { parse_chat(json::parse(R"({"model": "m", "moe": {"routing": 1}})")); }).find("moe.routing"),
            std::string::npos);
  EXPECT_TRUE(parse_chat(json::parse(R"({"model": "m", "moe": {"routing": true}, "keep_alive": "5m"})")).routing_trace);
}

TEST(OllamaRequest, GoTemplateSubset) {
  const std::string t = "{{ if .System }}<<{{ .System }}>>\n{{- end }}[{{ .Prompt }}]{{ .Response }}{{/* c */}}";
  EXPECT_EQ(render_go_template(t, "sys", "hi"), "<<sys>>[hi]");
  EXPECT_EQ(render_go_template(t, "", "hi"), "[hi]");
  EXPECT_EQ(render_go_template("{{ if .System }}a{{ else }}b{{ end }} {{- .Prompt -}} !", "", "p"), "bp!");
  EXPECT_NE(error_of([] { render_go_template("{{ range .Messages }}{{ end }}", "", ""); }).find("range .Messages"),
            std::string::npos);
  EXPECT_NE(error_of([] { render_go_template("{{ if .System }}x", "", ""); }).find("not closed"), std::string::npos);
  EXPECT_NE(error_of([] { render_go_template("{{ .Prompt ", "", ""); }).find("not closed"), std::string::npos);
}

}  // namespace
}  // namespace moe::server::ollama

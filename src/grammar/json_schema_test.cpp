// json_schema_test.cpp: the json_object grammar (response_format json_object), every supported JSON
// Schema keyword on the compiled automaton (valid instances accepted, invalid ones refused), refused
// keywords naming themselves, hostile schemas, and the regex subset.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "grammar/grammar.h"

namespace moe::grammar {
namespace {

using json = nlohmann::ordered_json;

std::shared_ptr<const Grammar> schema(const std::string& text) { return compile_gbnf(json_schema_to_gbnf(json::parse(text))); }

bool whole(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  Matcher m(g);
  return m.advance(text) && m.accepting();
}

std::string schema_error(const std::string& text, std::string* keyword = nullptr) {
  try {
    compile_gbnf(json_schema_to_gbnf(json::parse(text)));
  } catch (const GrammarError& e) {
    if (keyword) *keyword = e.keyword;
    return e.what();
  }
  return "(compiled)";
}

// ---- json_object ------------------------------------------------------------------------------------

std::shared_ptr<const Grammar> object_grammar() {
  static auto g = compile_gbnf(json_object_gbnf());
  return g;
}

bool object_complete(const std::string& s) {
  Matcher m(object_grammar());
  return m.advance(s) && m.complete();
}

TEST(JsonObject, AcceptsObjectsRejectsOthers) {
  EXPECT_TRUE(object_complete(R"({})"));
  EXPECT_TRUE(object_complete(R"( {"a": [1, -2.5e+3, 0, true, false, null, "x\n\u00e9"], "b": {"c": {}}})"));
  EXPECT_FALSE(object_complete(R"([1])"));  // json_object: the top level is an object
  EXPECT_FALSE(object_complete(R"({"a" 1})"));
  EXPECT_FALSE(object_complete(R"({"a":01})"));
  EXPECT_FALSE(object_complete(R"({"a":1,})"));
  EXPECT_FALSE(object_complete(R"({"a":tru})"));
  EXPECT_FALSE(object_complete("{\"a\":\"\x01\"}"));
  EXPECT_FALSE(object_complete(R"({"a":"\x"})"));
  EXPECT_FALSE(object_complete(R"({} x)"));
  EXPECT_TRUE(object_complete(R"({"a":1e99})"));
  EXPECT_FALSE(object_complete(R"({"a":1e999})"));  // grammatical, but overflows a double
  EXPECT_FALSE(object_complete("{" + std::string(9, ' ') + "}"));  // whitespace runs are bounded
  Matcher m(object_grammar());
  EXPECT_TRUE(m.advance("{\"k\": 12"));
  EXPECT_FALSE(m.complete());
  EXPECT_FALSE(m.advance("]"));  // refused, state unchanged
  EXPECT_TRUE(m.advance("}"));
  EXPECT_TRUE(m.complete());
  EXPECT_FALSE(m.accepts(" "));  // nothing after the object
}

// From every reachable state, the shortest completion is accepted and completes the object.
TEST(JsonObject, ShortestCompletionAlwaysCompletes) {
  const std::vector<std::string> prefixes = {
      "", "{", "{\"", "{\"k", "{\"k\\", "{\"k\\u00", "{\"k\"", "{\"k\":", "{\"k\":-", "{\"k\":0", "{\"k\":12.",
      "{\"k\":1.5", "{\"k\":1e", "{\"k\":1e+", "{\"k\":1e5", "{\"k\":tr", "{\"k\":n", "{\"k\":\"v", "{\"k\":\"v\\",
      "{\"k\":[", "{\"k\":[1", "{\"k\":[1,", "{\"k\":[{\"a\":[[", "{\"k\":1,", "{\"k\":{}", "{\"k\":\"\\u1"};
  for (const auto& p : prefixes) {
    Matcher m(object_grammar());
    ASSERT_TRUE(m.advance(p)) << p;
    std::string close = m.shortest_completion();
    ASSERT_TRUE(m.advance(close)) << p << " + " << close;
    ASSERT_TRUE(m.complete()) << p << " + " << close;
    auto parsed = nlohmann::json::parse(p + close, nullptr, false);
    EXPECT_TRUE(parsed.is_object()) << p + close;
  }
}

// Random generation under the grammar always yields JSON that nlohmann parses, and every valid document
// generated independently is accepted byte by byte.
TEST(JsonObject, ConstrainedRandomTextParses) {
  std::mt19937 rng(11);
  const std::vector<std::string> pieces = {"{", "}", "[", "]", ",", ":", "\"", "a", "\\", "n", "u", "0", "1",
                                           "9", ".", "e", "-", "+", " ", "true", "fal", "se", "null", "\"k\"", "12",
                                           "l", "r", "s", "t", "f"};
  int completed = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    Matcher m(object_grammar());
    std::string out;
    for (int step = 0; step < 200 && !m.complete(); ++step) {
      std::vector<const std::string*> ok;
      for (const auto& p : pieces)
        if (m.accepts(p)) ok.push_back(&p);
      ASSERT_FALSE(ok.empty()) << "dead end after: " << out;
      const std::string& p = *ok[rng() % ok.size()];
      ASSERT_TRUE(m.advance(p));
      out += p;
    }
    if (m.complete()) {
      ++completed;
      auto parsed = nlohmann::json::parse(out, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << out;
      ASSERT_TRUE(parsed.is_object()) << out;
    }
  }
  EXPECT_GT(completed, 50);
  for (int iter = 0; iter < 300; ++iter) {
    nlohmann::json doc = {{"n", static_cast<int>(rng() % 1000) - 500}, {"f", (rng() % 1000) / 7.0},
                          {"s", std::string(1 + rng() % 5, static_cast<char>('a' + rng() % 26))},
                          {"l", {1, "x", nullptr, false}}, {"o", {{"k", {1.5e10}}}}};
    std::string text = doc.dump(iter % 2 ? 1 : -1);
    Matcher m(object_grammar());
    for (char c : text) ASSERT_TRUE(m.advance(std::string_view(&c, 1))) << text;
    ASSERT_TRUE(m.complete());
  }
}

// ---- JSON Schema keywords ---------------------------------------------------------------------------

TEST(JsonSchema, Types) {
  auto s = schema(R"({"type": "string"})");
  EXPECT_TRUE(whole(s, R"("hi \"there\"")"));
  EXPECT_FALSE(whole(s, "12"));
  auto i = schema(R"({"type": "integer"})");
  EXPECT_TRUE(whole(i, "-12"));
  EXPECT_FALSE(whole(i, "1.5"));
  EXPECT_FALSE(whole(i, "012"));
  auto n = schema(R"({"type": "number"})");
  EXPECT_TRUE(whole(n, "-1.5e3"));
  EXPECT_FALSE(whole(n, "\"1\""));
  EXPECT_TRUE(whole(schema(R"({"type": "boolean"})"), "false"));
  EXPECT_FALSE(whole(schema(R"({"type": "boolean"})"), "null"));
  EXPECT_TRUE(whole(schema(R"({"type": "null"})"), "null"));
  auto multi = schema(R"({"type": ["string", "null"]})");
  EXPECT_TRUE(whole(multi, "null"));
  EXPECT_TRUE(whole(multi, "\"x\""));
  EXPECT_FALSE(whole(multi, "1"));
  auto any = schema(R"({})");
  EXPECT_TRUE(whole(any, R"([1, {"a": null}])"));
  EXPECT_TRUE(whole(schema("true"), "3"));
  EXPECT_NE(schema_error("false").find("matches nothing"), std::string::npos);
}

TEST(JsonSchema, PropertiesRequiredAdditional) {
  auto g = schema(R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                      "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name"]})");
  EXPECT_TRUE(whole(g, R"({"name": "a"})"));
  EXPECT_TRUE(whole(g, R"({"name": "a", "age": 3})"));
  EXPECT_TRUE(whole(g, R"({"name": "a", "tags": ["x"]})"));
  EXPECT_TRUE(whole(g, R"({ "name" : "a" , "age" : 3 , "tags" : [ ] })"));
  EXPECT_FALSE(whole(g, R"({"age": 3})"));                // name is required
  EXPECT_FALSE(whole(g, R"({"name": "a", "other": 1})"));  // no additionalProperties
  EXPECT_FALSE(whole(g, R"({"name": 1})"));
  EXPECT_FALSE(whole(g, R"({"name": "a",})"));
  auto opt = schema(R"({"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})");
  EXPECT_TRUE(whole(opt, "{}"));
  EXPECT_TRUE(whole(opt, R"({"b": 2})"));
  EXPECT_TRUE(whole(opt, R"({"a": 1, "b": 2})"));
  EXPECT_FALSE(whole(opt, R"({"a": 1 "b": 2})"));
  auto extra = schema(R"({"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}})");
  EXPECT_TRUE(whole(extra, R"({"id": 1, "x": true, "idx": false})"));
  EXPECT_TRUE(whole(extra, R"({"zz": true})"));
  EXPECT_FALSE(whole(extra, R"({"id": 1, "id": true})"));  // a declared name is not an extra key
  EXPECT_FALSE(whole(extra, R"({"id": 1, "x": 3})"));
  auto open = schema(R"({"type": "object", "additionalProperties": true})");
  EXPECT_TRUE(whole(open, R"({"a": [1], "b": {}})"));
  EXPECT_NE(schema_error(R"({"properties": {}, "required": ["x"]})").find("'x' is not in 'properties'"), std::string::npos);
}

TEST(JsonSchema, EnumAndConst) {
  auto e = schema(R"({"enum": ["red", "green", 3, null, {"a": 1}]})");
  EXPECT_TRUE(whole(e, "\"green\""));
  EXPECT_TRUE(whole(e, "3"));
  EXPECT_TRUE(whole(e, "null"));
  EXPECT_TRUE(whole(e, R"({"a":1})"));
  EXPECT_FALSE(whole(e, "\"blue\""));
  auto c = schema(R"({"const": "fixed"})");
  EXPECT_TRUE(whole(c, "\"fixed\""));
  EXPECT_FALSE(whole(c, "\"fixe\""));
}

TEST(JsonSchema, ArraysWithCounts) {
  auto a = schema(R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3})");
  EXPECT_FALSE(whole(a, "[1]"));
  EXPECT_TRUE(whole(a, "[1, 2]"));
  EXPECT_TRUE(whole(a, "[1,2,3]"));
  EXPECT_FALSE(whole(a, "[1,2,3,4]"));
  EXPECT_FALSE(whole(a, "[1,\"2\"]"));
  auto any = schema(R"({"type": "array"})");
  EXPECT_TRUE(whole(any, "[]"));
  EXPECT_TRUE(whole(any, "[1, \"a\", []]"));
  auto tuple = schema(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false, "minItems": 1})");
  EXPECT_TRUE(whole(tuple, "[\"a\"]"));
  EXPECT_TRUE(whole(tuple, "[\"a\", 1]"));
  EXPECT_FALSE(whole(tuple, "[\"a\", 1, 2]"));
  EXPECT_FALSE(whole(tuple, "[]"));
  EXPECT_FALSE(whole(tuple, "[1]"));
  auto empty_ok = schema(R"({"type": "array", "items": {"type": "boolean"}, "maxItems": 1})");
  EXPECT_TRUE(whole(empty_ok, "[]"));
  EXPECT_TRUE(whole(empty_ok, "[true]"));
  EXPECT_FALSE(whole(empty_ok, "[true, false]"));
}

TEST(JsonSchema, AnyOfOneOfAllOf) {
  auto g = schema(R"({"anyOf": [{"type": "integer"}, {"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"]}]})");
  EXPECT_TRUE(whole(g, "5"));
  EXPECT_TRUE(whole(g, R"({"k": 1})"));
  EXPECT_FALSE(whole(g, "\"s\""));
  auto o = schema(R"({"oneOf": [{"type": "string"}, {"type": "boolean"}]})");
  EXPECT_TRUE(whole(o, "true"));
  EXPECT_FALSE(whole(o, "1"));
  auto a = schema(R"({"allOf": [{"type": "string", "maxLength": 1}]})");
  EXPECT_TRUE(whole(a, "\"x\""));
  EXPECT_FALSE(whole(a, "\"xy\""));
  std::string kw;
  schema_error(R"({"allOf": [{"type": "string"}, {"maxLength": 1}]})", &kw);
  EXPECT_EQ(kw, "allOf");
}

TEST(JsonSchema, RefsAndRecursion) {
  auto tree = schema(R"({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}}, "$ref": "#/$defs/node"})");
  EXPECT_TRUE(whole(tree, R"({"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]})"));
  EXPECT_FALSE(whole(tree, R"({"v": 1, "kids": [{"w": 2}]})"));
  auto self = schema(R"({"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["next"]})");
  EXPECT_TRUE(whole(self, R"({"next": {"next": null}})"));
  EXPECT_FALSE(whole(self, R"({"next": {}})"));
  auto old = schema(R"({"definitions": {"x": {"type": "boolean"}}, "properties": {"a": {"$ref": "#/definitions/x"}}})");
  EXPECT_TRUE(whole(old, R"({"a": true})"));
  std::string kw;
  EXPECT_NE(schema_error(R"({"$ref": "#/$defs/missing"})", &kw).find("does not resolve"), std::string::npos);
  EXPECT_EQ(kw, "$ref");
  EXPECT_NE(schema_error(R"({"$ref": "http://x/y.json"})").find("only local"), std::string::npos);
  // A reference cycle that never reaches a value cannot finish.
  EXPECT_NE(schema_error(R"({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})").find("never finish"), std::string::npos);
}

TEST(JsonSchema, Nullable) {
  auto g = schema(R"({"type": "integer", "nullable": true})");
  EXPECT_TRUE(whole(g, "null"));
  EXPECT_TRUE(whole(g, "4"));
  EXPECT_FALSE(whole(g, "\"4\""));
}

TEST(JsonSchema, StringLength) {
  auto g = schema(R"({"type": "string", "minLength": 2, "maxLength": 4})");
  EXPECT_FALSE(whole(g, "\"a\""));
  EXPECT_TRUE(whole(g, "\"ab\""));
  EXPECT_TRUE(whole(g, "\"é\\n\\u0041b\""));  // characters, escapes count as one
  EXPECT_FALSE(whole(g, "\"abcde\""));
  auto min = schema(R"({"type": "string", "minLength": 1})");
  EXPECT_FALSE(whole(min, "\"\""));
  EXPECT_TRUE(whole(min, "\"abcdefghijkl\""));
}

TEST(JsonSchema, IntegerRanges) {
  std::mt19937 rng(3);
  const std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> cases = {
      {R"({"type": "integer", "minimum": 0})", {0, INT64_MAX}},
      {R"({"type": "integer", "minimum": 1})", {1, INT64_MAX}},
      {R"({"type": "integer", "minimum": 17})", {17, INT64_MAX}},
      {R"({"type": "integer", "maximum": 0})", {INT64_MIN, 0}},
      {R"({"type": "integer", "maximum": 250})", {INT64_MIN, 250}},
      {R"({"type": "integer", "maximum": -7})", {INT64_MIN, -7}},
      {R"({"type": "integer", "minimum": -5})", {-5, INT64_MAX}},
      {R"({"type": "integer", "minimum": 3, "maximum": 1234})", {3, 1234}},
      {R"({"type": "integer", "minimum": -120, "maximum": 45})", {-120, 45}},
      {R"({"type": "integer", "minimum": -99, "maximum": -10})", {-99, -10}},
      {R"({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100})", {1, 99}},
      {R"({"type": "integer", "minimum": 1.5, "maximum": 9.5})", {2, 9}},
  };
  for (const auto& [text, range] : cases) {
    auto g = schema(text);
    auto [lo, hi] = range;
    for (int64_t v = -1300; v <= 1300; ++v) ASSERT_EQ(whole(g, std::to_string(v)), v >= lo && v <= hi) << text << " " << v;
    for (int k = 0; k < 300; ++k) {
      int64_t v = static_cast<int64_t>(rng() % 2000000) - 1000000;
      ASSERT_EQ(whole(g, std::to_string(v)), v >= lo && v <= hi) << text << " " << v;
    }
    EXPECT_FALSE(whole(g, "01"));
    EXPECT_FALSE(whole(g, "-0")) << text;
  }
}

TEST(JsonSchema, NumberBounds) {
  auto g = schema(R"({"type": "number", "minimum": 0, "maximum": 10})");
  EXPECT_TRUE(whole(g, "0"));
  EXPECT_TRUE(whole(g, "9.99"));
  EXPECT_TRUE(whole(g, "10"));
  EXPECT_TRUE(whole(g, "10.000"));
  EXPECT_FALSE(whole(g, "10.5"));
  EXPECT_FALSE(whole(g, "-1"));
  EXPECT_FALSE(whole(g, "11"));
  auto pos = schema(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(whole(pos, "123.5"));
  EXPECT_FALSE(whole(pos, "-0.5"));
  std::string kw;
  schema_error(R"({"type": "number", "minimum": -1.5})", &kw);
  EXPECT_EQ(kw, "minimum");
  schema_error(R"({"type": "number", "exclusiveMaximum": 3})", &kw);
  EXPECT_EQ(kw, "exclusiveMaximum");
}

TEST(JsonSchema, Pattern) {
  auto g = schema(R"({"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"})");
  EXPECT_TRUE(whole(g, "\"AB-123\""));
  EXPECT_FALSE(whole(g, "\"AB-12\""));
  EXPECT_FALSE(whole(g, "\"xAB-123\""));
  auto unanchored = schema(R"({"type": "string", "pattern": "ab+c"})");
  EXPECT_TRUE(whole(unanchored, "\"xxabbbcyy\""));
  EXPECT_FALSE(whole(unanchored, "\"xxacyy\""));
  // Quotes and backslashes of the value are escaped in the JSON text.
  auto q = schema(R"({"type": "string", "pattern": "^a\"b\\\\c$"})");
  EXPECT_TRUE(whole(q, R"("a\"b\\c")"));
  EXPECT_FALSE(whole(q, R"("a"b\c")"));
  auto cls = schema(R"({"type": "string", "pattern": "^[^a-z]+$"})");
  EXPECT_TRUE(whole(cls, R"("A\"\\1")"));
  EXPECT_FALSE(whole(cls, R"("A"")"));
  std::string kw;
  EXPECT_NE(schema_error(R"({"type": "string", "pattern": "(a)\\1"})", &kw).find("backreferences"), std::string::npos);
  EXPECT_EQ(kw, "pattern");
}

TEST(JsonSchema, Formats) {
  auto d = schema(R"({"type": "string", "format": "date"})");
  EXPECT_TRUE(whole(d, "\"2024-02-29\""));
  EXPECT_FALSE(whole(d, "\"2024-13-01\""));
  auto u = schema(R"({"type": "string", "format": "uuid"})");
  EXPECT_TRUE(whole(u, "\"123e4567-e89b-12d3-a456-426614174000\""));
  EXPECT_FALSE(whole(u, "\"123e4567\""));
  auto dt = schema(R"({"type": "string", "format": "date-time"})");
  EXPECT_TRUE(whole(dt, "\"2024-01-02T03:04:05Z\""));
  EXPECT_TRUE(whole(dt, "\"2024-01-02T03:04:05.123+02:00\""));
  std::string kw;
  schema_error(R"({"type": "string", "format": "email"})", &kw);
  EXPECT_EQ(kw, "format");
}

TEST(JsonSchema, UnsupportedKeywordsAreNamed) {
  for (const char* k : {"not", "if", "uniqueItems", "multipleOf", "patternProperties", "minProperties", "contains", "propertyNames", "dependentRequired"}) {
    std::string kw;
    std::string msg = schema_error(std::string(R"({"type": "object", ")") + k + R"(": {}})", &kw);
    EXPECT_EQ(kw, k) << msg;
    EXPECT_NE(msg.find(k), std::string::npos);
  }
  // Annotations are fine.
  EXPECT_EQ(schema_error(R"({"title": "T", "description": "d", "$schema": "x", "default": 1, "examples": [1], "x-foo": 2, "type": "integer"})"), "(compiled)");
}

TEST(JsonSchema, HostileSchemasFailFast) {
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += R"({"type": "array", "items": )";
  deep += "{}" + std::string(10000, '}');
  json parsed = json::parse(deep);
  std::string kw;
  auto t0 = std::chrono::steady_clock::now();
  try {
    json_schema_to_gbnf(parsed);
    FAIL();
  } catch (const GrammarError& e) {
    kw = e.keyword;
  }
  EXPECT_EQ(kw, "max_nesting");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  std::string big_text = R"({"type": "object", "properties": {)";
  for (int i = 0; i < 30000; ++i)
    big_text += (i ? "," : "") + std::string("\"property_number_") + std::to_string(i) + R"(": {"type": "string", "description": "xxxxxxxxxxxxxxxxxxxx"})";
  big_text += "}}";  // about 1.6 MB
  json big = nlohmann::json::parse(big_text);
  auto t1 = std::chrono::steady_clock::now();
  try {
    json_schema_to_gbnf(big);
    FAIL();
  } catch (const GrammarError& e) {
    kw = e.keyword;
  }
  EXPECT_EQ(kw, "max_schema_bytes");
  auto t2 = std::chrono::steady_clock::now();
  EXPECT_LT(std::chrono::duration<double>(t2 - t1).count(), 1.0);
  std::string msg = schema_error(R"({"type": "array", "maxItems": 100000})", &kw);
  EXPECT_EQ(kw, "maxItems");
}

TEST(JsonSchema, RulesArePrefixedAndConcatenate) {
  std::string a = json_schema_to_gbnf(json::parse(R"({"type": "integer"})"), "f-args");
  std::string b = json_schema_to_gbnf(json::parse(R"({"type": "string"})"), "g-args");
  for (const std::string* rules : {&a, &b}) {
    std::string prefix = rules == &a ? "f-args" : "g-args";
    size_t pos = 0;
    while (pos < rules->size()) {
      size_t eol = rules->find('\n', pos);
      std::string line = rules->substr(pos, eol - pos);
      EXPECT_EQ(line.rfind(prefix, 0), 0u) << line;
      pos = eol + 1;
    }
  }
  auto g = compile_gbnf("root ::= \"<call>\" f-args \"|\" g-args \"</call>\"\n" + a + b);
  EXPECT_TRUE(whole(g, "<call>12|\"x\"</call>"));
  EXPECT_FALSE(whole(g, "<call>\"x\"|12</call>"));
}

// ---- regex subset (guided_regex) --------------------------------------------------------------------

bool regex_whole(const std::string& pattern, const std::string& text) { return whole(compile_gbnf(regex_to_gbnf(pattern)), text); }

std::string regex_error(const std::string& pattern) {
  try {
    compile_gbnf(regex_to_gbnf(pattern));
  } catch (const GrammarError& e) {
    return e.what();
  }
  return "(compiled)";
}

TEST(Regex, Subset) {
  EXPECT_TRUE(regex_whole("a|bc", "bc"));
  EXPECT_FALSE(regex_whole("a|bc", "abc"));
  EXPECT_TRUE(regex_whole("(ab)+c?", "ababc"));
  EXPECT_TRUE(regex_whole("(?:x|y){2,3}", "xyx"));
  EXPECT_FALSE(regex_whole("(?:x|y){2,3}", "x"));
  EXPECT_TRUE(regex_whole("\\d+\\.\\d*", "12."));
  EXPECT_TRUE(regex_whole("\\w\\s\\W", "_ !"));
  EXPECT_TRUE(regex_whole("[^\\d]+", "abc"));
  EXPECT_FALSE(regex_whole("[^\\d]+", "a1"));
  EXPECT_TRUE(regex_whole(".+", "a€b"));
  EXPECT_FALSE(regex_whole(".+", "a\nb"));
  EXPECT_TRUE(regex_whole("^a{2}$", "aa"));
  EXPECT_TRUE(regex_whole("\\u00e9\\x41[\\-a]", "éA-"));
  EXPECT_TRUE(regex_whole("(?<year>\\d{4})", "2024"));
  EXPECT_TRUE(regex_whole("a+?b", "aab"));
  EXPECT_TRUE(regex_whole("x{", "x{"));
}

TEST(Regex, RefusedFeaturesAreNamed) {
  EXPECT_NE(regex_error("(a)\\1").find("backreferences"), std::string::npos);
  EXPECT_NE(regex_error("a(?=b)").find("lookaround"), std::string::npos);
  EXPECT_NE(regex_error("(?i)a").find("inline flags"), std::string::npos);
  EXPECT_NE(regex_error("\\bword").find("word boundaries"), std::string::npos);
  EXPECT_NE(regex_error("\\p{L}").find("Unicode property"), std::string::npos);
  EXPECT_NE(regex_error("a^b").find("'^'"), std::string::npos);
  EXPECT_NE(regex_error("a$b").find("'$'"), std::string::npos);
  EXPECT_NE(regex_error("(a+)+$").find("catastrophic"), std::string::npos);
  EXPECT_NE(regex_error("(a*)*").find("catastrophic"), std::string::npos);
  EXPECT_NE(regex_error("(a").find("unbalanced"), std::string::npos);
  EXPECT_NE(regex_error("a)").find("unbalanced"), std::string::npos);
  EXPECT_NE(regex_error("[a").find("unterminated"), std::string::npos);
  EXPECT_NE(regex_error("a{5000}").find("limit"), std::string::npos);
  EXPECT_NE(regex_error("*a").find("nothing to repeat"), std::string::npos);
}

TEST(Choice, OneOfTheStrings) {
  auto g = compile_gbnf(choice_to_gbnf({"positive", "negative", "neutral"}));
  EXPECT_TRUE(whole(g, "neutral"));
  EXPECT_FALSE(whole(g, "neutra"));
  EXPECT_FALSE(whole(g, "positive!"));
}

}  // namespace
}  // namespace moe::grammar

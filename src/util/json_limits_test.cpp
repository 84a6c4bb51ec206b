// json_limits_test.cpp: the depth and size bounds of json_limits.h, on values far deeper than any
// recursive code could survive (1,000,000 levels): refused with a message, quickly, without a crash.
#include <gtest/gtest.h>

#include <string>

#include "util/error.h"
#include "util/json_limits.h"

namespace moe::util {
namespace {

std::string error_of(const std::string& text, const JsonLimits& limits = {}) {
  try {
    parse_ordered_json_limited(text, limits, "messages file");
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonLimits, AMillionLevelsAreRefusedBeforeParsing) {
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  std::string e = error_of(deep);
  EXPECT_NE(e.find("messages file is nested too deeply: more than 256 levels"), std::string::npos) << e;
  EXPECT_NE(e.find("at byte 256"), std::string::npos) << e;
  const std::string objects = [] {
    std::string s;
    for (int k = 0; k < 1000000; ++k) s += "{\"a\":";
    return s + "1" + std::string(1000000, '}');
  }();
  EXPECT_NE(error_of(objects).find("nested too deeply"), std::string::npos);
}

TEST(JsonLimits, DepthAtTheLimitParsesAndBracketsInStringsDoNotCount) {
  JsonLimits limits;
  limits.max_depth = 3;
  EXPECT_EQ(parse_json_limited("[[[1]]]", limits, "x").dump(), "[[[1]]]");
  EXPECT_NE(error_of("[[[[1]]]]", limits).find("more than 3 levels"), std::string::npos);
  EXPECT_EQ(parse_json_limited(R"(["[[[[\"{{{{", {"k": "]]]]"}])", limits, "x")[0].get<std::string>(),
            "[[[[\"{{{{");
  // Closing brackets in excess do not wrap the counter around; the parser reports the syntax error.
  EXPECT_NE(error_of("]]]][[[", limits).find("messages file is not valid JSON"), std::string::npos);
}

TEST(JsonLimits, SizeIsBounded) {
  JsonLimits limits;
  limits.max_bytes = 10;
  EXPECT_NE(error_of("\"0123456789\"", limits).find("messages file is too large: 12 bytes, the limit is 10"),
            std::string::npos);
  EXPECT_EQ(parse_json_limited("[1,2,3]", limits, "x").size(), 3u);
}

TEST(JsonLimits, DepthOfAParsedValueIsMeasuredWithoutRecursion) {
  // Built by hand (the parser would refuse it): 200,000 levels, measured without recursing into it.
  nlohmann::json deep = 1;
  for (int k = 0; k < 200000; ++k) {
    nlohmann::json wrap = nlohmann::json::array();
    wrap.push_back(std::move(deep));
    deep = std::move(wrap);
  }
  EXPECT_EQ(json_depth(deep, 256), 257);
  EXPECT_EQ(json_depth(nlohmann::json::parse(R"({"a":[1,{"b":[]}],"c":2})"), 256), 4);
  EXPECT_EQ(json_depth(nlohmann::json(5), 256), 0);
}

}  // namespace
}  // namespace moe::util

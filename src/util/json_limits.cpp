// json_limits.cpp: the pre-scan and the iterative depth measure behind json_limits.h.
#include "util/json_limits.h"

#include <utility>
#include <vector>

#include "util/error.h"

namespace moe::util {

void check_json_limits(std::string_view text, const JsonLimits& limits, std::string_view what) {
  if (text.size() > limits.max_bytes)
    fail(what, " is too large: ", text.size(), " bytes, the limit is ", limits.max_bytes);
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits.max_depth)
        fail(what, " is nested too deeply: more than ", limits.max_depth, " levels of arrays and objects (at byte ",
             i, ")");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

template <typename Json>
static Json parse_limited(std::string_view text, const JsonLimits& limits, std::string_view what) {
  check_json_limits(text, limits, what);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(what, " is not valid JSON: ", e.what());
  }
}

nlohmann::json parse_json_limited(std::string_view text, const JsonLimits& limits, std::string_view what) {
  return parse_limited<nlohmann::json>(text, limits, what);
}

nlohmann::ordered_json parse_ordered_json_limited(std::string_view text, const JsonLimits& limits,
                                                  std::string_view what) {
  return parse_limited<nlohmann::ordered_json>(text, limits, what);
}

template <typename Json>
static int depth_of(const Json& root, int limit) {
  // An explicit stack of (value, depth) instead of recursion: the value may be arbitrarily deep.
  std::vector<std::pair<const Json*, int>> stack{{&root, 0}};
  int deepest = 0;
  while (!stack.empty()) {
    auto [v, d] = stack.back();
    stack.pop_back();
    if (!v->is_structured()) continue;
    int inner = d + 1;
    if (inner > deepest) deepest = inner;
    if (deepest > limit) return limit + 1;
    for (const auto& child : *v) stack.emplace_back(&child, inner);
  }
  return deepest;
}

int json_depth(const nlohmann::json& value, int limit) { return depth_of(value, limit); }
int json_depth(const nlohmann::ordered_json& value, int limit) { return depth_of(value, limit); }

}  // namespace moe::util

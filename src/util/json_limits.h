// json_limits.h: parsing untrusted JSON with a bound on its size and nesting depth, checked before any
// value is built. nlohmann's parser is iterative, but much of what is done with a parsed value is not
// (copies, comparisons, the template engine's conversion), so a value 1,000,000 levels deep must be
// refused at the door: a linear pre-scan counts the depth of the raw text (no allocation) and only text
// within the bounds is parsed. json_depth_exceeds() checks an already parsed value the same way,
// without recursion, for values that come from elsewhere (a library caller).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace moe::util {

struct JsonLimits {
  size_t max_bytes = size_t{64} << 20;  // the text's length
  int max_depth = 256;                  // arrays and objects open at once
};

// Throws moe::Error naming `what` (e.g. "messages file") when the text is longer than max_bytes or nests
// deeper than max_depth, with the byte offset where the limit was crossed. Strings are skipped (a '['
// inside one does not count); the text need not be valid JSON (the parser reports that).
void check_json_limits(std::string_view text, const JsonLimits& limits, std::string_view what);

// check_json_limits, then nlohmann's parser; a syntax error becomes a moe::Error naming `what` too.
nlohmann::json parse_json_limited(std::string_view text, const JsonLimits& limits, std::string_view what);
nlohmann::ordered_json parse_ordered_json_limited(std::string_view text, const JsonLimits& limits,
                                                  std::string_view what);

// The nesting depth of a parsed value (a scalar is 0, [] is 1), computed without recursion, stopping
// as soon as it exceeds `limit` (then it returns limit + 1).
int json_depth(const nlohmann::json& value, int limit);
int json_depth(const nlohmann::ordered_json& value, int limit);

}  // namespace moe::util

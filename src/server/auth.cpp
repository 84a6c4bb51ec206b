// auth.cpp: API-key checks (see auth.h).
#include "server/auth.h"

#include <fstream>

#include "util/error.h"

namespace moe::server {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

bool constant_time_equals(std::string_view a, std::string_view b) {
  // Walk the longer length so the loop count does not depend on which bytes match; a length mismatch
  // still fails.
  size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= unsigned(x ^ y);
  }
  return diff == 0;
}

bool authorized(std::string_view expected_key, std::string_view authorization) {
  if (expected_key.empty()) return true;
  std::string_view h = trim(authorization);
  constexpr std::string_view kScheme = "bearer ";
  if (h.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = h[i];
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    if (c != kScheme[i]) return false;
  }
  return constant_time_equals(trim(h.substr(kScheme.size())), expected_key);
}

std::string read_api_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot read the API key file ", path);
  std::string line;
  std::getline(in, line);
  std::string key(trim(line));
  if (key.empty()) fail("the API key file ", path, " holds no key on its first line");
  return key;
}

}  // namespace moe::server

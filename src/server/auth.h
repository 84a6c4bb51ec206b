// auth.h: API-key checks for the server. The comparison takes the same time whatever the key sent, so
// a client cannot learn the key byte by byte from response times.
#pragma once
#include <string>
#include <string_view>

namespace moe::server {

// Compares in time that depends only on the lengths, never on where the bytes differ.
bool constant_time_equals(std::string_view a, std::string_view b);

// True when `authorization` (the Authorization header) is "Bearer <key>" with the expected key. The
// scheme is case-insensitive; surrounding spaces are ignored. An empty expected key accepts anything.
bool authorized(std::string_view expected_key, std::string_view authorization);

// Reads a key file: its first line, without surrounding whitespace. Throws moe::Error if it cannot be
// read or holds no key.
std::string read_api_key_file(const std::string& path);

}  // namespace moe::server

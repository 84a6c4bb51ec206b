// auth_test.cpp: API key checks: Bearer parsing, wrong and missing keys, lengths, the key file.
#include "server/auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "util/error.h"

namespace moe::server {
namespace {

TEST(ServerAuth, ConstantTimeEquals) {
  EXPECT_TRUE(constant_time_equals("", ""));
  EXPECT_TRUE(constant_time_equals("secret", "secret"));
  EXPECT_FALSE(constant_time_equals("secret", "secreT"));
  EXPECT_FALSE(constant_time_equals("secret", "secret1"));
  EXPECT_FALSE(constant_time_equals("secret1", "secret"));
  EXPECT_FALSE(constant_time_equals("", "x"));
  // A prefix padded with NULs must not match.
  EXPECT_FALSE(constant_time_equals(std::string("ab\0", 3), "ab"));
}

TEST(ServerAuth, BearerHeader) {
  EXPECT_TRUE(authorized("k1", "Bearer k1"));
  EXPECT_TRUE(authorized("k1", "bearer k1"));
  EXPECT_TRUE(authorized("k1", "  Bearer   k1  "));
  EXPECT_FALSE(authorized("k1", "Bearer k2"));
  EXPECT_FALSE(authorized("k1", "Bearer "));
  EXPECT_FALSE(authorized("k1", ""));
  EXPECT_FALSE(authorized("k1", "k1"));
  EXPECT_FALSE(authorized("k1", "Basic k1"));
  EXPECT_TRUE(authorized("", ""));          // no key configured
  EXPECT_TRUE(authorized("", "Bearer x"));
}

TEST(ServerAuth, KeyFile) {
  std::string path = ::testing::TempDir() + "/moe_key_test.txt";
  {
    std::ofstream(path) << "  sk-local-123 \nsecond line\n";
  }
  EXPECT_EQ(read_api_key_file(path), "sk-local-123");
  {
    std::ofstream(path) << "\n";
  }
  EXPECT_THROW(read_api_key_file(path), moe::Error);
  std::remove(path.c_str());
  EXPECT_THROW(read_api_key_file(path), moe::Error);
}

}  // namespace
}  // namespace moe::server

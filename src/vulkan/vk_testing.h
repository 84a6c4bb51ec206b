// vk_testing.h: the Vulkan context the device tests share, and the rule for when there is none: a
// machine without a Vulkan device (no loader, no driver) skips them with a message saying what is
// missing; in CI (CI=true), where scripts/install-deps.sh installs lavapipe, they fail instead.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "vulkan/context.h"

namespace moe::vk::testing {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::strcmp(ci, "true") == 0;
}

// The device the tests run on: MOE_VK_TEST_DEVICE=N, else the preferred one (a GPU before lavapipe).
// Null when there is none (the reason in *why). Made once per test process.
inline std::shared_ptr<Context> shared_context(std::string* why) {
  static std::string reason;
  static std::shared_ptr<Context> ctx = []() -> std::shared_ptr<Context> {
    std::vector<DeviceInfo> devices = list_devices(&reason);
    if (devices.empty()) return nullptr;
    int index = preferred_device(devices);
    if (const char* env = std::getenv("MOE_VK_TEST_DEVICE")) index = std::atoi(env);
    try {
      return std::make_shared<Context>(index);
    } catch (const std::exception& e) {
      reason = e.what();
      return nullptr;
    }
  }();
  if (why) *why = reason;
  return ctx;
}

}  // namespace moe::vk::testing

// In a TEST body: binds `ctx` (a Context&) to the shared device, or skips (fails in CI) when none exists.
#define MOE_VK_CONTEXT_OR_SKIP(ctx)                                                                     \
  std::string moe_vk_why_;                                                                           \
  std::shared_ptr<::moe::vk::Context> moe_vk_ctx_ = ::moe::vk::testing::shared_context(&moe_vk_why_); \
  if (!moe_vk_ctx_) {                                                                                 \
    if (::moe::vk::testing::in_ci()) FAIL() << "no Vulkan device, and CI must run the GPU tests: " << moe_vk_why_; \
    GTEST_SKIP() << "no Vulkan device (" << moe_vk_why_ << "); install mesa-vulkan-drivers to run the GPU tests"; \
  }                                                                                                   \
  ::moe::vk::Context& ctx = *moe_vk_ctx_

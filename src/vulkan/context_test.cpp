// context_test.cpp: the device layer on whatever Vulkan device the machine has (lavapipe in CI):
// discovery, buffers of every kind, uploads and downloads through the staging path (also ranges larger
// than one staging chunk), ordering by barriers, the copy shader, and the errors callers may hit.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "util/error.h"
#include "vulkan/ops.h"
#include "vulkan/shaders.h"
#include "vulkan/vk_testing.h"

namespace moe::vk {
namespace {

TEST(VkContext, ListsDevicesWithTheirLimits) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::vector<DeviceInfo> devices = list_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_GE(preferred_device(devices), 0);
  const DeviceInfo& d = ctx.info();
  EXPECT_FALSE(d.name.empty());
  EXPECT_GE(d.max_storage_buffer_range, 1u << 27);  // the Vulkan minimum is 128 MiB
  EXPECT_GT(d.subgroup_size, 0u);
  EXPECT_GE(d.api_version, (1u << 22) | (2u << 12));  // Vulkan 1.2 or later (VK_MAKE_API_VERSION(0, 1, 2, 0))
}

TEST(VkContext, EveryEmbeddedShaderIsFoundByName) {
  auto all = embedded_shaders();
  ASSERT_FALSE(all.empty());
  for (const ShaderCode& s : all) {
    ASSERT_NE(find_shader(s.name), nullptr) << s.name;
    EXPECT_EQ(s.spirv[0], 0x07230203u) << s.name << " is not SPIR-V";  // the SPIR-V magic number
  }
  EXPECT_EQ(find_shader("no_such_shader"), nullptr);
}

TEST(VkContext, UploadDownloadRoundTripsThroughStaging) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(std::random_device{}());
  // 70 MiB: more than one 64 MiB staging chunk, so the chunked path runs; odd sub-ranges too.
  const size_t n = (70u << 20) / 4;
  std::vector<uint32_t> data(n);
  for (auto& v : data) v = rng();
  Buffer dev = ctx.buffer(n * 4, MemoryKind::Device);
  ctx.upload(BufferRef(dev), data.data());
  std::vector<uint32_t> back(n, 0);
  ctx.download(BufferRef(dev), back.data());
  EXPECT_TRUE(back == data);
  // A sub-range written and read at an offset.
  std::vector<uint32_t> part(1000);
  for (auto& v : part) v = rng();
  ctx.upload(BufferRef(dev, 4096, part.size() * 4), part.data());
  std::vector<uint32_t> got(1002);
  ctx.download(BufferRef(dev, 4092, got.size() * 4), got.data());
  EXPECT_EQ(got[0], data[1023]);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), got.begin() + 1));
  EXPECT_EQ(got[1001], data[1024 + 1000]);
  ctx.zero(BufferRef(dev, 0, 64));
  std::vector<uint32_t> z(16, 1);
  ctx.download(BufferRef(dev, 0, 64), z.data());
  EXPECT_EQ(std::accumulate(z.begin(), z.end(), 0u), 0u);
}

TEST(VkContext, DeviceMemoryIsCountedAndReturned) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  const uint64_t before = ctx.device_bytes_in_use();
  {
    Buffer a = ctx.buffer(1 << 20, MemoryKind::Device);
    Buffer b = ctx.buffer(4096, MemoryKind::Readback);  // host-visible: not counted
    EXPECT_EQ(ctx.device_bytes_in_use(), before + (1 << 20));
    Buffer moved = std::move(a);
    EXPECT_EQ(ctx.device_bytes_in_use(), before + (1 << 20));
    EXPECT_NE(b.mapped(), nullptr);
  }
  EXPECT_EQ(ctx.device_bytes_in_use(), before);
}

// The copy shader moves every byte, and barriers order a chain: a -> b -> c in one stream.
TEST(VkContext, CopyShaderChainOrderedByBarriers) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(std::random_device{}());
  const size_t n = 3 * 1024 * 1024 + 4;  // words; not a multiple of the group size
  std::vector<uint32_t> data(n);
  for (auto& v : data) v = rng();
  Buffer a = ctx.buffer(n * 4, MemoryKind::Device), b = ctx.buffer(n * 4, MemoryKind::Device),
         c = ctx.buffer(n * 4, MemoryKind::Device);
  ctx.upload(BufferRef(a), data.data());
  ctx.zero(BufferRef(c));
  Stream s(ctx);
  copy_words(s, BufferRef(a), BufferRef(b), n * 4);
  s.barrier();
  copy_words(s, BufferRef(b), BufferRef(c), n * 4);
  EXPECT_EQ(s.dispatches_recorded(), 2);
  s.run();
  std::vector<uint32_t> back(n);
  ctx.download(BufferRef(c), back.data());
  EXPECT_TRUE(back == data);
  // The stream records again after run().
  ctx.zero(BufferRef(c));
  copy_words(s, BufferRef(a), BufferRef(c), 4096);
  s.run();
  ctx.download(BufferRef(c, 0, 4096), back.data());
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 1024, data.begin()));
}

TEST(VkContext, MisuseIsAClearError) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  Buffer a = ctx.buffer(4096, MemoryKind::Device);
  std::vector<uint8_t> host(8192);
  EXPECT_THROW(ctx.upload(BufferRef(a, 0, 8192), host.data()), Error);  // past the end
  Stream s(ctx);
  const Pipeline& p = ctx.pipeline("copy_words", 2, 4);
  uint32_t push = 1;
  EXPECT_THROW(s.dispatch(p, {BufferRef(a)}, &push, 4, 1), Error);                       // one buffer short
  EXPECT_THROW(s.dispatch(p, {BufferRef(a, 4), BufferRef(a)}, &push, 4, 1), Error);     // misaligned offset
  EXPECT_THROW(ctx.pipeline("no_such_shader", 1, 0), Error);
  EXPECT_THROW(Context(1 << 20), Error);  // no such device
  try {
    Context bad(-1);
    FAIL() << "device -1 opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe::vk

// context.h: the Vulkan compute device as the rest of moe sees it — device discovery, buffers, compute
// pipelines of the shaders embedded in the binary (shaders.h), and command streams that record many
// dispatches and run them with one submission.
//
// Why so small: every operation of the model (ops.h) is "bind some buffer ranges, push a few constants,
// dispatch a grid", so that is the whole interface. Memory barriers are explicit (Stream::barrier) and
// coarse (all compute writes before, all reads after): a forward step is a chain of dependent kernels
// and a finer scheme would buy little. Descriptor sets are allocated per dispatch from a pool the
// stream owns and resets, so recording needs no bookkeeping by the caller.
//
// Nothing here knows the model. Errors (no loader, no device, out of device memory, a shader that does
// not compile on this driver) are moe::Error naming the device and what failed.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe::vk {

// One Vulkan physical device, as `moe info --devices` lists it.
struct DeviceInfo {
  int index = 0;                       // the N of --device vulkan:N (enumeration order)
  std::string name;                    // "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)"
  std::string type;                    // "discrete", "integrated", "virtual", "cpu", "other"
  uint32_t api_version = 0;            // VK_MAKE_API_VERSION of the driver's Vulkan
  std::string driver;                  // driver name and version, when the driver reports them
  uint64_t device_local_bytes = 0;     // the largest DEVICE_LOCAL heap
  uint64_t max_storage_buffer_range = 0;  // bytes one storage-buffer binding may span
  uint64_t max_allocation_bytes = 0;   // maxMemoryAllocationSize (one VkDeviceMemory)
  uint32_t max_shared_memory = 0;      // maxComputeSharedMemorySize
  uint32_t subgroup_size = 0;
  // Optional features moe uses where present (each has a plain path that runs without it).
  bool subgroup_arithmetic = false;    // subgroupAdd and friends in compute shaders
  bool float16 = false;                // shaderFloat16 + 16-bit storage buffers
  bool int8 = false;                   // shaderInt8 + 8-bit storage buffers
  bool integer_dot_product = false;    // VK_KHR_shader_integer_dot_product
  bool cooperative_matrix = false;     // VK_KHR_cooperative_matrix
  std::vector<std::string> extensions_used;  // the device extensions moe enables on it
};

// The Vulkan devices of this machine. Never throws: when there is no Vulkan loader or no device the
// list is empty and `why_none` (if given) says why ("no Vulkan loader (libvulkan.so.1)", "no Vulkan
// device: install mesa-vulkan-drivers for the CPU driver", the VkResult of a failing call).
std::vector<DeviceInfo> list_devices(std::string* why_none = nullptr);
// The device `--device vulkan` (no index) opens: a discrete GPU before an integrated one before a
// virtual one before a CPU driver (lavapipe), the first listed among equals; -1 when the list is empty.
int preferred_device(const std::vector<DeviceInfo>& devices);

enum class MemoryKind {
  Device,    // device-local: weights, activations, the KV cache
  Upload,    // host-visible and coherent, written by the CPU (staging)
  Readback,  // host-visible, cached where the device offers it, read by the CPU
};

class Context;

// A buffer and its memory. Move-only; freed with its Context still alive (the Context must outlive it).
class Buffer {
 public:
  Buffer() = default;
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint64_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }
  bool valid() const { return handle_ != 0; }
  // The CPU address of a host-visible buffer (Upload, Readback); null for Device buffers.
  void* mapped() const { return mapped_; }
  uint64_t handle() const { return handle_; }  // the VkBuffer

 private:
  friend class Context;
  void release();
  Context* ctx_ = nullptr;
  uint64_t handle_ = 0;  // VkBuffer
  uint64_t memory_ = 0;  // VkDeviceMemory
  uint64_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::Device;
  void* mapped_ = nullptr;
};

// A range of a buffer bound to one shader binding. bytes 0 means "to the end of the buffer". Offsets
// must be multiples of 16 (minStorageBufferOffsetAlignment is at most 256 by the spec; Context::align
// gives the device's value).
struct BufferRef {
  const Buffer* buffer = nullptr;
  uint64_t offset = 0;
  uint64_t bytes = 0;

  BufferRef() = default;
  BufferRef(const Buffer& b, uint64_t off = 0, uint64_t n = 0) : buffer(&b), offset(off), bytes(n) {}
  uint64_t size() const;  // the resolved length
};

// A compute pipeline: one shader, its descriptor set layout (n storage buffers at set 0, bindings
// 0..n-1) and push-constant range. Owned by the Context (cached by shader, bindings, push size and
// specialization constants).
struct Pipeline {
  uint64_t pipeline = 0;    // VkPipeline
  uint64_t layout = 0;      // VkPipelineLayout
  uint64_t set_layout = 0;  // VkDescriptorSetLayout
  uint32_t n_bindings = 0;
  uint32_t push_bytes = 0;
  std::string name;
};

class Context {
 public:
  // Opens device `index` of list_devices(). Throws moe::Error naming the reason (no such device, no
  // compute queue, a failing Vulkan call with its VkResult).
  explicit Context(int index = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  uint64_t storage_alignment() const { return storage_align_; }  // minStorageBufferOffsetAlignment
  // Rounds n up to storage_alignment() (for carving one buffer into bound ranges).
  uint64_t align(uint64_t n) const { return (n + storage_align_ - 1) / storage_align_ * storage_align_; }

  // Allocates a buffer; throws moe::Error naming the size and the memory kind when the device cannot.
  Buffer buffer(uint64_t bytes, MemoryKind kind);
  // Device-local memory allocated through buffer() and not yet freed, in bytes.
  uint64_t device_bytes_in_use() const { return device_in_use_; }

  // Blocking copies between host memory and any buffer (staged through a host-visible buffer of at most
  // 64 MiB for Device buffers). dst/src ranges must lie inside the buffer.
  void upload(const BufferRef& dst, const void* src);
  void download(const BufferRef& src, void* dst);
  void zero(const BufferRef& dst);

  // The pipeline of embedded shader `shader` (its name in shaders.h) with the given layout and
  // specialization constants (constant_id i = spec[i]). Created on first use and cached; throws
  // moe::Error for an unknown shader or when the driver rejects it.
  const Pipeline& pipeline(std::string_view shader, uint32_t n_bindings, uint32_t push_bytes,
                           std::span<const uint32_t> spec = {});

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  friend class Buffer;
  friend class Stream;
  void free_buffer(Buffer& b);
  std::unique_ptr<Impl> impl_;
  DeviceInfo info_;
  uint64_t storage_align_ = 16;
  uint64_t device_in_use_ = 0;
};

// One command buffer being recorded. Dispatches run in recording order only where barrier() separates
// them; run() submits everything recorded, waits for the device, and leaves the stream empty for the
// next recording. A forward step is one stream: one submission and one wait per step.
class Stream {
 public:
  explicit Stream(Context& ctx);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Context& context() { return *ctx_; }

  // Records one dispatch of `p` over groups_x * groups_y * groups_z workgroups with bindings[i] at
  // binding i (bindings.size() must equal p.n_bindings) and push constants (push_bytes == p.push_bytes).
  // Group counts above the device's limit are a moe::Error (callers split grids, see ops.h).
  void dispatch(const Pipeline& p, std::initializer_list<BufferRef> bindings, const void* push,
                uint32_t push_bytes, uint32_t groups_x, uint32_t groups_y = 1, uint32_t groups_z = 1);
  // Every shader and transfer write recorded before is visible to everything recorded after.
  void barrier();
  // Records a buffer-to-buffer copy (src.size() bytes) and zero-fill; follow with barrier() before use.
  void copy(const BufferRef& src, const BufferRef& dst);
  void fill_zero(const BufferRef& dst);
  // Submits what was recorded and waits. Throws moe::Error when the device reports a failure
  // (VK_ERROR_DEVICE_LOST names the last shader recorded).
  void run();
  int64_t dispatches_recorded() const { return n_dispatch_; }

 private:
  struct Impl;
  Context* ctx_;
  std::unique_ptr<Impl> impl_;
  int64_t n_dispatch_ = 0;
};

}  // namespace moe::vk

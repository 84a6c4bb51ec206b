// context.cpp: the Vulkan device layer (context.h). The loader is opened at run time (dlopen of
// libvulkan.so.1) rather than linked, so the moe binary starts and runs on the CPU on a machine
// without Vulkan, and `--device vulkan` there says what is missing instead of the dynamic linker
// refusing to start the program.
#include "vulkan/context.h"

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

// Vulkan structs are written `T x{VK_STRUCTURE_TYPE_...}` (the rest value-initialized to zero), the
// API's own idiom; -Wextra would flag every one of them.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "util/error.h"
#include "vulkan/shaders.h"

namespace moe::vk {

namespace {

// ---- the loader and its entry points ------------------------------------------------------------

#define MOE_VK_GLOBAL_FNS(X) X(vkCreateInstance) X(vkEnumerateInstanceExtensionProperties)
#define MOE_VK_INSTANCE_FNS(X)                                                                            \
  X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)                     \
  X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2) X(vkGetPhysicalDeviceMemoryProperties) \
  X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice)    \
  X(vkGetDeviceProcAddr)
#define MOE_VK_DEVICE_FNS(X)                                                                              \
  X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer)                              \
  X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) \
  X(vkUnmapMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout)         \
  X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout)                     \
  X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool)    \
  X(vkResetDescriptorPool) X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkCreateCommandPool)    \
  X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)        \
  X(vkResetCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants)            \
  X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkQueueSubmit)          \
  X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences) X(vkDeviceWaitIdle)               \
  X(vkInvalidateMappedMemoryRanges)

#define MOE_VK_DECLARE(name) PFN_##name name = nullptr;
struct Loader {
  void* lib = nullptr;
  std::string error;  // why it could not be opened
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  MOE_VK_GLOBAL_FNS(MOE_VK_DECLARE)
};
// Instance- and device-level entry points; one set per process (moe opens one instance).
struct InstanceFns {
  MOE_VK_INSTANCE_FNS(MOE_VK_DECLARE)
};
struct DeviceFns {
  MOE_VK_DEVICE_FNS(MOE_VK_DECLARE)
};
#undef MOE_VK_DECLARE

const Loader& loader() {
  static const Loader l = [] {
    Loader r;
    r.lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!r.lib) {
      r.error = "no Vulkan loader (libvulkan.so.1; Debian package libvulkan1)";
      return r;
    }
    r.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(r.lib, "vkGetInstanceProcAddr"));
    if (!r.vkGetInstanceProcAddr) {
      r.error = "libvulkan.so.1 has no vkGetInstanceProcAddr";
      return r;
    }
#define MOE_VK_LOAD(name) r.name = reinterpret_cast<PFN_##name>(r.vkGetInstanceProcAddr(nullptr, #name));
    MOE_VK_GLOBAL_FNS(MOE_VK_LOAD)
#undef MOE_VK_LOAD
    if (!r.vkCreateInstance) r.error = "the Vulkan loader lacks vkCreateInstance";
    return r;
  }();
  return l;
}

const char* result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
    default: return "VkResult (other)";
  }
}

[[noreturn]] void vk_fail(VkResult r, const char* call, const std::string& device) {
  fail("Vulkan: ", call, " failed with ", result_name(r), " (", static_cast<int>(r), ")",
       device.empty() ? std::string() : cat(" on ", device));
}

void vk_check(VkResult r, const char* call, const std::string& device = {}) {
  if (r != VK_SUCCESS) vk_fail(r, call, device);
}

// One instance per process, made on first use and kept (destroying and re-creating instances is slow
// on some drivers and buys nothing here).
struct Instance {
  VkInstance instance = VK_NULL_HANDLE;
  InstanceFns fns;
  std::string error;
};

const Instance& instance() {
  static const Instance inst = [] {
    Instance r;
    const Loader& l = loader();
    if (!l.error.empty()) {
      r.error = l.error;
      return r;
    }
    // Portability enumeration lets MoltenVK-style drivers be listed; enabled only where the loader has it.
    uint32_t n_ext = 0;
    l.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, nullptr);
    std::vector<VkExtensionProperties> exts(n_ext);
    if (n_ext) l.vkEnumerateInstanceExtensionProperties(nullptr, &n_ext, exts.data());
    std::vector<const char*> enable;
    VkInstanceCreateFlags flags = 0;
    for (const auto& e : exts)
      if (std::strcmp(e.extensionName, "VK_KHR_portability_enumeration") == 0) {
        enable.push_back("VK_KHR_portability_enumeration");
        flags |= 0x00000001;  // VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR
      }
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "moe";
    app.pEngineName = "moe";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.flags = flags;
    ci.pApplicationInfo = &app;
    ci.enabledExtensionCount = static_cast<uint32_t>(enable.size());
    ci.ppEnabledExtensionNames = enable.data();
    VkResult res = l.vkCreateInstance(&ci, nullptr, &r.instance);
    if (res != VK_SUCCESS) {
      r.error = cat("vkCreateInstance failed with ", result_name(res),
                    res == VK_ERROR_INCOMPATIBLE_DRIVER ? " (no Vulkan 1.2 driver: install mesa-vulkan-drivers for "
                                                          "the CPU driver, or the GPU vendor's Vulkan driver)"
                                                        : "");
      r.instance = VK_NULL_HANDLE;
      return r;
    }
#define MOE_VK_LOAD(name) r.fns.name = reinterpret_cast<PFN_##name>(l.vkGetInstanceProcAddr(r.instance, #name));
    MOE_VK_INSTANCE_FNS(MOE_VK_LOAD)
#undef MOE_VK_LOAD
    return r;
  }();
  return inst;
}

bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  return std::any_of(exts.begin(), exts.end(), [&](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

const char* type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

// What a physical device offers, and the feature structs to enable it with (chained for vkCreateDevice).
struct Probe {
  DeviceInfo info;
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties mem{};
  uint32_t queue_family = UINT32_MAX;
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  std::vector<const char*> extensions;
};

// Fills `p` for physical device `pd`; false when it cannot run moe (no compute queue, Vulkan < 1.2).
bool probe(VkPhysicalDevice pd, int index, Probe& p) {
  const InstanceFns& f = instance().fns;
  f.vkGetPhysicalDeviceProperties(pd, &p.props);
  f.vkGetPhysicalDeviceMemoryProperties(pd, &p.mem);
  DeviceInfo& d = p.info;
  d.index = index;
  d.name = p.props.deviceName;
  d.type = type_name(p.props.deviceType);
  d.api_version = p.props.apiVersion;
  d.max_storage_buffer_range = p.props.limits.maxStorageBufferRange;
  d.max_shared_memory = p.props.limits.maxComputeSharedMemorySize;
  for (uint32_t i = 0; i < p.mem.memoryHeapCount; ++i)
    if (p.mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      d.device_local_bytes = std::max<uint64_t>(d.device_local_bytes, p.mem.memoryHeaps[i].size);

  uint32_t nq = 0;
  f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qs(nq);
  f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qs.data());
  // Prefer a compute queue without graphics (the dedicated compute engine where there is one).
  for (uint32_t i = 0; i < nq; ++i)
    if ((qs[i].queueFlags & VK_QUEUE_COMPUTE_BIT) &&
        (p.queue_family == UINT32_MAX || !(qs[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
      p.queue_family = i;

  uint32_t ne = 0;
  f.vkEnumerateDeviceExtensionProperties(pd, nullptr, &ne, nullptr);
  std::vector<VkExtensionProperties> exts(ne);
  if (ne) f.vkEnumerateDeviceExtensionProperties(pd, nullptr, &ne, exts.data());

  VkPhysicalDeviceSubgroupProperties sub{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceDriverProperties drv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  sub.pNext = &m3;
  m3.pNext = &drv;
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  p2.pNext = &sub;
  f.vkGetPhysicalDeviceProperties2(pd, &p2);
  d.subgroup_size = sub.subgroupSize;
  d.subgroup_arithmetic = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                          (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  d.max_allocation_bytes = m3.maxMemoryAllocationSize;
  d.driver = cat(drv.driverName, drv.driverInfo[0] ? " " : "", drv.driverInfo);

  const bool has_dot = has_extension(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  p.f11.pNext = &p.f12;
  p.f12.pNext = has_dot ? static_cast<void*>(&p.fdot) : nullptr;
  p.f2.pNext = &p.f11;
  f.vkGetPhysicalDeviceFeatures2(pd, &p.f2);
  d.float16 = p.f12.shaderFloat16 && p.f11.storageBuffer16BitAccess;
  d.int8 = p.f12.shaderInt8 && p.f12.storageBuffer8BitAccess;
  d.integer_dot_product = has_dot && p.fdot.shaderIntegerDotProduct;
  // The header Debian 12 ships predates VK_KHR_cooperative_matrix, so it is reported, not yet used.
  d.cooperative_matrix = has_extension(exts, "VK_KHR_cooperative_matrix");
  if (d.integer_dot_product) p.extensions.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  else p.f12.pNext = nullptr;
  for (const char* e : p.extensions) d.extensions_used.emplace_back(e);
  return p.queue_family != UINT32_MAX && VK_API_VERSION_MINOR(p.props.apiVersion) + 10 * VK_API_VERSION_MAJOR(p.props.apiVersion) >= 12;
}

std::vector<VkPhysicalDevice> physical_devices(std::string* why) {
  const Instance& inst = instance();
  if (inst.instance == VK_NULL_HANDLE) {
    if (why) *why = inst.error;
    return {};
  }
  uint32_t n = 0;
  VkResult r = inst.fns.vkEnumeratePhysicalDevices(inst.instance, &n, nullptr);
  std::vector<VkPhysicalDevice> pds(n);
  if (r == VK_SUCCESS && n) r = inst.fns.vkEnumeratePhysicalDevices(inst.instance, &n, pds.data());
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
    if (why) *why = cat("vkEnumeratePhysicalDevices failed with ", result_name(r));
    return {};
  }
  pds.resize(n);
  if (pds.empty() && why)
    *why = "no Vulkan device (install mesa-vulkan-drivers for the CPU driver lavapipe, or the GPU vendor's Vulkan driver)";
  return pds;
}

// Memory type index with all of `need` (and preferably all of `want`) among `allowed` type bits.
int pick_memory_type(const VkPhysicalDeviceMemoryProperties& mem, uint32_t allowed, VkMemoryPropertyFlags need,
                     VkMemoryPropertyFlags want) {
  int fallback = -1;
  for (uint32_t i = 0; i < mem.memoryTypeCount; ++i) {
    if (!(allowed & (1u << i))) continue;
    const VkMemoryPropertyFlags f = mem.memoryTypes[i].propertyFlags;
    if ((f & need) != need) continue;
    if ((f & want) == want) return static_cast<int>(i);
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  return fallback;
}

const char* kind_name(MemoryKind k) {
  switch (k) {
    case MemoryKind::Device: return "device-local";
    case MemoryKind::Upload: return "upload (host-visible)";
    case MemoryKind::Readback: return "readback (host-visible)";
  }
  return "?";
}

constexpr uint64_t kStagingBytes = 64ull << 20;

}  // namespace

std::vector<DeviceInfo> list_devices(std::string* why_none) {
  std::vector<DeviceInfo> out;
  std::string why;
  std::vector<VkPhysicalDevice> pds = physical_devices(&why);
  for (size_t i = 0; i < pds.size(); ++i) {
    Probe p;
    if (probe(pds[i], static_cast<int>(i), p)) out.push_back(p.info);
  }
  if (out.empty() && why_none) *why_none = why.empty() ? "no Vulkan device supports Vulkan 1.2 compute" : why;
  return out;
}

int preferred_device(const std::vector<DeviceInfo>& devices) {
  auto rank = [](const std::string& t) {
    if (t == "discrete") return 0;
    if (t == "integrated") return 1;
    if (t == "virtual") return 2;
    if (t == "other") return 3;
    return 4;  // cpu
  };
  int best = -1;
  for (const DeviceInfo& d : devices)
    if (best < 0 || rank(d.type) < rank(devices[static_cast<size_t>(best)].type)) best = static_cast<int>(&d - devices.data());
  return best < 0 ? -1 : devices[static_cast<size_t>(best)].index;
}

// ---- Context ---------------------------------------------------------------------------------------

struct Context::Impl {
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties mem{};
  VkDevice device = VK_NULL_HANDLE;
  DeviceFns fn;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t queue_family = 0;
  std::mutex queue_mutex;  // vkQueueSubmit needs the queue externally synchronized
  // Blocking transfers (upload/download/zero) share one command buffer, fence and staging buffer.
  std::mutex transfer_mutex;
  VkCommandPool transfer_pool = VK_NULL_HANDLE;
  VkCommandBuffer transfer_cmd = VK_NULL_HANDLE;
  VkFence transfer_fence = VK_NULL_HANDLE;
  Buffer staging;
  std::mutex pipeline_mutex;
  std::map<std::tuple<std::string, uint32_t, uint32_t, std::vector<uint32_t>>, std::unique_ptr<Pipeline>> pipelines;
  std::string name;

  void submit_and_wait(VkCommandBuffer cmd, VkFence fence, const char* what) {
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    {
      std::lock_guard<std::mutex> lock(queue_mutex);
      VkResult r = fn.vkQueueSubmit(queue, 1, &si, fence);
      if (r != VK_SUCCESS) vk_fail(r, what, name);
    }
    VkResult r = fn.vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) vk_fail(r, what, name);
    vk_check(fn.vkResetFences(device, 1, &fence), "vkResetFences", name);
  }
};

Context::Context(int index) : impl_(std::make_unique<Impl>()) {
  std::string why;
  std::vector<VkPhysicalDevice> pds = physical_devices(&why);
  if (pds.empty()) fail("no Vulkan device: ", why);
  if (index < 0 || static_cast<size_t>(index) >= pds.size())
    fail("Vulkan device ", index, " does not exist (", pds.size(), " device", pds.size() == 1 ? "" : "s",
         ": see `moe info --devices`)");
  Probe p;
  if (!probe(pds[static_cast<size_t>(index)], index, p))
    fail("Vulkan device ", index, " (", p.info.name, ") has no Vulkan 1.2 compute queue");
  Impl& m = *impl_;
  info_ = p.info;
  m.name = cat("Vulkan device ", index, " (", info_.name, ")");
  m.physical = pds[static_cast<size_t>(index)];
  m.props = p.props;
  m.mem = p.mem;
  m.queue_family = p.queue_family;
  storage_align_ = std::max<uint64_t>(16, p.props.limits.minStorageBufferOffsetAlignment);

  // Enable exactly the optional features the shaders may use, where present.
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  f2.features.shaderInt16 = p.f2.features.shaderInt16;
  f2.features.shaderInt64 = p.f2.features.shaderInt64;
  f11.storageBuffer16BitAccess = p.f11.storageBuffer16BitAccess;
  f11.uniformAndStorageBuffer16BitAccess = p.f11.uniformAndStorageBuffer16BitAccess;
  f12.storageBuffer8BitAccess = p.f12.storageBuffer8BitAccess;
  f12.uniformAndStorageBuffer8BitAccess = p.f12.uniformAndStorageBuffer8BitAccess;
  f12.shaderFloat16 = p.f12.shaderFloat16;
  f12.shaderInt8 = p.f12.shaderInt8;
  fdot.shaderIntegerDotProduct = info_.integer_dot_product ? VK_TRUE : VK_FALSE;
  f2.pNext = &f11;
  f11.pNext = &f12;
  f12.pNext = info_.integer_dot_product ? static_cast<void*>(&fdot) : nullptr;

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = m.queue_family;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &f2;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = static_cast<uint32_t>(p.extensions.size());
  dci.ppEnabledExtensionNames = p.extensions.data();
  const InstanceFns& fi = instance().fns;
  vk_check(fi.vkCreateDevice(m.physical, &dci, nullptr, &m.device), "vkCreateDevice", m.name);
#define MOE_VK_LOAD(name) m.fn.name = reinterpret_cast<PFN_##name>(fi.vkGetDeviceProcAddr(m.device, #name));
  MOE_VK_DEVICE_FNS(MOE_VK_LOAD)
#undef MOE_VK_LOAD
  m.fn.vkGetDeviceQueue(m.device, m.queue_family, 0, &m.queue);

  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = m.queue_family;
  vk_check(m.fn.vkCreateCommandPool(m.device, &pci, nullptr, &m.transfer_pool), "vkCreateCommandPool", m.name);
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = m.transfer_pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  vk_check(m.fn.vkAllocateCommandBuffers(m.device, &cai, &m.transfer_cmd), "vkAllocateCommandBuffers", m.name);
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vk_check(m.fn.vkCreateFence(m.device, &fci, nullptr, &m.transfer_fence), "vkCreateFence", m.name);
}

Context::~Context() {
  Impl& m = *impl_;
  if (m.device == VK_NULL_HANDLE) return;
  m.fn.vkDeviceWaitIdle(m.device);
  m.staging = Buffer();
  for (auto& [key, p] : m.pipelines) {
    m.fn.vkDestroyPipeline(m.device, reinterpret_cast<VkPipeline>(p->pipeline), nullptr);
    m.fn.vkDestroyPipelineLayout(m.device, reinterpret_cast<VkPipelineLayout>(p->layout), nullptr);
    m.fn.vkDestroyDescriptorSetLayout(m.device, reinterpret_cast<VkDescriptorSetLayout>(p->set_layout), nullptr);
  }
  m.fn.vkDestroyFence(m.device, m.transfer_fence, nullptr);
  m.fn.vkDestroyCommandPool(m.device, m.transfer_pool, nullptr);
  m.fn.vkDestroyDevice(m.device, nullptr);
}

Buffer Context::buffer(uint64_t bytes, MemoryKind kind) {
  Impl& m = *impl_;
  if (bytes == 0) fail("internal: a Vulkan buffer of 0 bytes");
  if (info_.max_allocation_bytes && bytes > info_.max_allocation_bytes)
    fail(m.name, " cannot allocate ", bytes, " bytes in one buffer (its limit is ", info_.max_allocation_bytes, ")");
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = bytes;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  Buffer b;
  b.ctx_ = this;
  b.bytes_ = bytes;
  b.kind_ = kind;
  VkBuffer vb = VK_NULL_HANDLE;
  vk_check(m.fn.vkCreateBuffer(m.device, &bci, nullptr, &vb), "vkCreateBuffer", m.name);
  b.handle_ = reinterpret_cast<uint64_t>(vb);
  VkMemoryRequirements req;
  m.fn.vkGetBufferMemoryRequirements(m.device, vb, &req);
  VkMemoryPropertyFlags need = 0, want = 0;
  switch (kind) {
    case MemoryKind::Device: need = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT; break;
    case MemoryKind::Upload: need = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT; break;
    case MemoryKind::Readback:
      need = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
      want = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
      break;
  }
  int type = pick_memory_type(m.mem, req.memoryTypeBits, need, want);
  if (type < 0 && kind == MemoryKind::Device) type = pick_memory_type(m.mem, req.memoryTypeBits, 0, 0);
  if (type < 0) {
    b.release();
    fail(m.name, " has no ", kind_name(kind), " memory type for a buffer");
  }
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = static_cast<uint32_t>(type);
  VkDeviceMemory mem = VK_NULL_HANDLE;
  VkResult r = m.fn.vkAllocateMemory(m.device, &mai, nullptr, &mem);
  if (r != VK_SUCCESS) {
    b.release();
    fail(m.name, ": cannot allocate ", bytes, " bytes of ", kind_name(kind), " memory (", result_name(r), "; ",
         device_in_use_, " bytes of device memory already in use)");
  }
  b.memory_ = reinterpret_cast<uint64_t>(mem);
  r = m.fn.vkBindBufferMemory(m.device, vb, mem, 0);
  if (r != VK_SUCCESS) {
    b.release();
    vk_fail(r, "vkBindBufferMemory", m.name);
  }
  if (kind != MemoryKind::Device) {
    r = m.fn.vkMapMemory(m.device, mem, 0, VK_WHOLE_SIZE, 0, &b.mapped_);
    if (r != VK_SUCCESS) {
      b.release();
      vk_fail(r, "vkMapMemory", m.name);
    }
  } else {
    device_in_use_ += bytes;
  }
  return b;
}

void Context::free_buffer(Buffer& b) {
  Impl& m = *impl_;
  if (b.mapped_) m.fn.vkUnmapMemory(m.device, reinterpret_cast<VkDeviceMemory>(b.memory_));
  if (b.handle_) m.fn.vkDestroyBuffer(m.device, reinterpret_cast<VkBuffer>(b.handle_), nullptr);
  if (b.memory_) {
    m.fn.vkFreeMemory(m.device, reinterpret_cast<VkDeviceMemory>(b.memory_), nullptr);
    if (b.kind_ == MemoryKind::Device) device_in_use_ -= b.bytes_;
  }
}

uint64_t BufferRef::size() const {
  if (!buffer) return 0;
  return bytes ? bytes : buffer->bytes() - std::min(offset, buffer->bytes());
}

namespace {
void check_range(const BufferRef& r, const char* what) {
  if (!r.buffer || !r.buffer->valid()) fail("internal: ", what, " of an empty Vulkan buffer");
  if (r.offset > r.buffer->bytes() || r.size() > r.buffer->bytes() - r.offset)
    fail("internal: ", what, " of bytes [", r.offset, ", ", r.offset + r.size(), ") of a ", r.buffer->bytes(), "-byte buffer");
}
}  // namespace

void Context::upload(const BufferRef& dst, const void* src) {
  check_range(dst, "upload");
  const uint64_t n = dst.size();
  if (dst.buffer->mapped()) {
    std::memcpy(static_cast<uint8_t*>(dst.buffer->mapped()) + dst.offset, src, n);
    return;
  }
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.transfer_mutex);
  if (!m.staging.valid()) m.staging = buffer(kStagingBytes, MemoryKind::Upload);
  for (uint64_t done = 0; done < n;) {
    const uint64_t chunk = std::min(n - done, kStagingBytes);
    std::memcpy(m.staging.mapped(), static_cast<const uint8_t*>(src) + done, chunk);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vk_check(m.fn.vkBeginCommandBuffer(m.transfer_cmd, &bi), "vkBeginCommandBuffer", m.name);
    VkBufferCopy region{0, dst.offset + done, chunk};
    m.fn.vkCmdCopyBuffer(m.transfer_cmd, reinterpret_cast<VkBuffer>(m.staging.handle()),
                         reinterpret_cast<VkBuffer>(dst.buffer->handle()), 1, &region);
    vk_check(m.fn.vkEndCommandBuffer(m.transfer_cmd), "vkEndCommandBuffer", m.name);
    m.submit_and_wait(m.transfer_cmd, m.transfer_fence, "upload");
    done += chunk;
  }
}

void Context::download(const BufferRef& src, void* dst) {
  check_range(src, "download");
  const uint64_t n = src.size();
  Impl& m = *impl_;
  if (src.buffer->mapped()) {
    VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
    range.memory = reinterpret_cast<VkDeviceMemory>(src.buffer->memory_);
    range.size = VK_WHOLE_SIZE;
    m.fn.vkInvalidateMappedMemoryRanges(m.device, 1, &range);
    std::memcpy(dst, static_cast<const uint8_t*>(src.buffer->mapped()) + src.offset, n);
    return;
  }
  std::lock_guard<std::mutex> lock(m.transfer_mutex);
  if (!m.staging.valid()) m.staging = buffer(kStagingBytes, MemoryKind::Upload);
  for (uint64_t done = 0; done < n;) {
    const uint64_t chunk = std::min(n - done, kStagingBytes);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vk_check(m.fn.vkBeginCommandBuffer(m.transfer_cmd, &bi), "vkBeginCommandBuffer", m.name);
    VkBufferCopy region{src.offset + done, 0, chunk};
    m.fn.vkCmdCopyBuffer(m.transfer_cmd, reinterpret_cast<VkBuffer>(src.buffer->handle()),
                         reinterpret_cast<VkBuffer>(m.staging.handle()), 1, &region);
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    m.fn.vkCmdPipelineBarrier(m.transfer_cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0,
                              nullptr, 0, nullptr);
    vk_check(m.fn.vkEndCommandBuffer(m.transfer_cmd), "vkEndCommandBuffer", m.name);
    m.submit_and_wait(m.transfer_cmd, m.transfer_fence, "download");
    std::memcpy(static_cast<uint8_t*>(dst) + done, m.staging.mapped(), chunk);
    done += chunk;
  }
}

void Context::zero(const BufferRef& dst) {
  check_range(dst, "zero");
  if (dst.buffer->mapped()) {
    std::memset(static_cast<uint8_t*>(dst.buffer->mapped()) + dst.offset, 0, dst.size());
    return;
  }
  Stream s(*this);
  s.fill_zero(dst);
  s.run();
}

const Pipeline& Context::pipeline(std::string_view shader, uint32_t n_bindings, uint32_t push_bytes,
                                  std::span<const uint32_t> spec) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.pipeline_mutex);
  auto key = std::make_tuple(std::string(shader), n_bindings, push_bytes, std::vector<uint32_t>(spec.begin(), spec.end()));
  auto it = m.pipelines.find(key);
  if (it != m.pipelines.end()) return *it->second;
  const ShaderCode* code = find_shader(shader);
  if (!code) fail("internal: no embedded Vulkan shader named '", shader, "'");
  if (push_bytes > m.props.limits.maxPushConstantsSize)
    fail("internal: shader ", shader, " wants ", push_bytes, " bytes of push constants; ", m.name, " allows ",
         m.props.limits.maxPushConstantsSize);

  auto p = std::make_unique<Pipeline>();
  p->name = std::string(shader);
  p->n_bindings = n_bindings;
  p->push_bytes = push_bytes;
  std::vector<VkDescriptorSetLayoutBinding> bindings(n_bindings);
  for (uint32_t i = 0; i < n_bindings; ++i) {
    bindings[i].binding = i;
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dl.bindingCount = n_bindings;
  dl.pBindings = bindings.data();
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  vk_check(m.fn.vkCreateDescriptorSetLayout(m.device, &dl, nullptr, &set_layout), "vkCreateDescriptorSetLayout", m.name);
  p->set_layout = reinterpret_cast<uint64_t>(set_layout);
  VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &set_layout;
  pl.pushConstantRangeCount = push_bytes ? 1 : 0;
  pl.pPushConstantRanges = push_bytes ? &pcr : nullptr;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkResult r = m.fn.vkCreatePipelineLayout(m.device, &pl, nullptr, &layout);
  if (r != VK_SUCCESS) {
    m.fn.vkDestroyDescriptorSetLayout(m.device, set_layout, nullptr);
    vk_fail(r, "vkCreatePipelineLayout", m.name);
  }
  p->layout = reinterpret_cast<uint64_t>(layout);

  VkShaderModuleCreateInfo smi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smi.codeSize = code->spirv.size() * sizeof(uint32_t);
  smi.pCode = code->spirv.data();
  VkShaderModule module = VK_NULL_HANDLE;
  r = m.fn.vkCreateShaderModule(m.device, &smi, nullptr, &module);
  std::vector<VkSpecializationMapEntry> entries(spec.size());
  for (size_t i = 0; i < spec.size(); ++i)
    entries[i] = VkSpecializationMapEntry{static_cast<uint32_t>(i), static_cast<uint32_t>(i * 4), 4};
  VkSpecializationInfo si{static_cast<uint32_t>(entries.size()), entries.data(), spec.size() * 4, spec.data()};
  VkPipeline pipe = VK_NULL_HANDLE;
  if (r == VK_SUCCESS) {
    VkComputePipelineCreateInfo cpi{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    cpi.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    cpi.stage.module = module;
    cpi.stage.pName = "main";
    cpi.stage.pSpecializationInfo = spec.empty() ? nullptr : &si;
    cpi.layout = layout;
    r = m.fn.vkCreateComputePipelines(m.device, VK_NULL_HANDLE, 1, &cpi, nullptr, &pipe);
    m.fn.vkDestroyShaderModule(m.device, module, nullptr);
  }
  if (r != VK_SUCCESS) {
    m.fn.vkDestroyPipelineLayout(m.device, layout, nullptr);
    m.fn.vkDestroyDescriptorSetLayout(m.device, set_layout, nullptr);
    fail(m.name, " rejected shader '", shader, "': ", result_name(r),
         " (a feature it needs — 8/16-bit storage, float16, int8 — may be missing on this device)");
  }
  p->pipeline = reinterpret_cast<uint64_t>(pipe);
  return *(m.pipelines[std::move(key)] = std::move(p));
}

// ---- Buffer ----------------------------------------------------------------------------------------

Buffer::~Buffer() { release(); }
Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = o.ctx_;
    handle_ = o.handle_;
    memory_ = o.memory_;
    bytes_ = o.bytes_;
    kind_ = o.kind_;
    mapped_ = o.mapped_;
    o.ctx_ = nullptr;
    o.handle_ = o.memory_ = o.bytes_ = 0;
    o.mapped_ = nullptr;
  }
  return *this;
}
void Buffer::release() {
  if (ctx_ && (handle_ || memory_)) ctx_->free_buffer(*this);
  ctx_ = nullptr;
  handle_ = memory_ = 0;
  mapped_ = nullptr;
}

// ---- Stream ----------------------------------------------------------------------------------------

struct Stream::Impl {
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  std::vector<VkDescriptorPool> desc_pools;  // all allocated from this recording; reset by run()
  size_t desc_pool_used = 0;                 // index of the pool sets are taken from
  bool recording = false;
  std::string last_shader;
};

namespace {
constexpr uint32_t kSetsPerPool = 1024;
constexpr uint32_t kDescriptorsPerPool = kSetsPerPool * 8;
}  // namespace

Stream::Stream(Context& ctx) : ctx_(&ctx), impl_(std::make_unique<Impl>()) {
  Context::Impl& m = ctx.impl();
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = m.queue_family;
  vk_check(m.fn.vkCreateCommandPool(m.device, &pci, nullptr, &impl_->pool), "vkCreateCommandPool", m.name);
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = impl_->pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkResult r = m.fn.vkAllocateCommandBuffers(m.device, &cai, &impl_->cmd);
  if (r == VK_SUCCESS) r = m.fn.vkCreateFence(m.device, &fci, nullptr, &impl_->fence);
  if (r != VK_SUCCESS) {
    m.fn.vkDestroyCommandPool(m.device, impl_->pool, nullptr);
    vk_fail(r, "creating a command stream", m.name);
  }
}

Stream::~Stream() {
  Context::Impl& m = ctx_->impl();
  if (impl_->recording) {
    // Abandoned mid-recording (an exception while recording): end it so the pool can be destroyed.
    m.fn.vkEndCommandBuffer(impl_->cmd);
  }
  for (VkDescriptorPool p : impl_->desc_pools) m.fn.vkDestroyDescriptorPool(m.device, p, nullptr);
  m.fn.vkDestroyFence(m.device, impl_->fence, nullptr);
  m.fn.vkDestroyCommandPool(m.device, impl_->pool, nullptr);
}

namespace {
void begin_if_needed(Context::Impl& m, VkCommandBuffer cmd, bool& recording) {
  if (recording) return;
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  vk_check(m.fn.vkBeginCommandBuffer(cmd, &bi), "vkBeginCommandBuffer", m.name);
  recording = true;
}
}  // namespace

void Stream::dispatch(const Pipeline& p, std::initializer_list<BufferRef> bindings, const void* push,
                      uint32_t push_bytes, uint32_t groups_x, uint32_t groups_y, uint32_t groups_z) {
  Context::Impl& m = ctx_->impl();
  if (bindings.size() != p.n_bindings)
    fail("internal: shader ", p.name, " takes ", p.n_bindings, " buffers, given ", bindings.size());
  if (push_bytes != p.push_bytes)
    fail("internal: shader ", p.name, " takes ", p.push_bytes, " bytes of push constants, given ", push_bytes);
  const auto& lim = m.props.limits;
  if (groups_x > lim.maxComputeWorkGroupCount[0] || groups_y > lim.maxComputeWorkGroupCount[1] ||
      groups_z > lim.maxComputeWorkGroupCount[2])
    fail("internal: shader ", p.name, " dispatched over ", groups_x, "x", groups_y, "x", groups_z,
         " groups; the device allows ", lim.maxComputeWorkGroupCount[0], "x", lim.maxComputeWorkGroupCount[1], "x",
         lim.maxComputeWorkGroupCount[2]);
  if (groups_x == 0 || groups_y == 0 || groups_z == 0) return;  // nothing to run
  std::vector<VkDescriptorBufferInfo> infos;
  infos.reserve(bindings.size());
  for (const BufferRef& b : bindings) {
    check_range(b, p.name.c_str());
    if (b.offset % ctx_->storage_alignment() != 0)
      fail("internal: shader ", p.name, " bound at offset ", b.offset, ", not a multiple of the device's ",
           ctx_->storage_alignment(), "-byte storage alignment");
    if (b.size() > lim.maxStorageBufferRange)
      fail(m.name, " cannot bind ", b.size(), " bytes to shader ", p.name, ": its storage-buffer range limit is ",
           lim.maxStorageBufferRange, " bytes");
    infos.push_back(VkDescriptorBufferInfo{reinterpret_cast<VkBuffer>(b.buffer->handle()), b.offset, b.size()});
  }
  begin_if_needed(m, impl_->cmd, impl_->recording);

  // A descriptor set from this stream's pools (a new pool when the current one is full).
  VkDescriptorSet set = VK_NULL_HANDLE;
  const VkDescriptorSetLayout layout = reinterpret_cast<VkDescriptorSetLayout>(p.set_layout);
  for (;;) {
    if (impl_->desc_pool_used == impl_->desc_pools.size()) {
      VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kDescriptorsPerPool};
      VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      dpi.maxSets = kSetsPerPool;
      dpi.poolSizeCount = 1;
      dpi.pPoolSizes = &size;
      VkDescriptorPool pool = VK_NULL_HANDLE;
      vk_check(m.fn.vkCreateDescriptorPool(m.device, &dpi, nullptr, &pool), "vkCreateDescriptorPool", m.name);
      impl_->desc_pools.push_back(pool);
    }
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = impl_->desc_pools[impl_->desc_pool_used];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &layout;
    VkResult r = m.fn.vkAllocateDescriptorSets(m.device, &ai, &set);
    if (r == VK_SUCCESS) break;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) vk_fail(r, "vkAllocateDescriptorSets", m.name);
    ++impl_->desc_pool_used;
  }
  std::vector<VkWriteDescriptorSet> writes(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    writes[i] = VkWriteDescriptorSet{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = static_cast<uint32_t>(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  m.fn.vkUpdateDescriptorSets(m.device, static_cast<uint32_t>(writes.size()), writes.data(), 0, nullptr);
  m.fn.vkCmdBindPipeline(impl_->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, reinterpret_cast<VkPipeline>(p.pipeline));
  m.fn.vkCmdBindDescriptorSets(impl_->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, reinterpret_cast<VkPipelineLayout>(p.layout),
                               0, 1, &set, 0, nullptr);
  if (push_bytes)
    m.fn.vkCmdPushConstants(impl_->cmd, reinterpret_cast<VkPipelineLayout>(p.layout), VK_SHADER_STAGE_COMPUTE_BIT, 0,
                            push_bytes, push);
  m.fn.vkCmdDispatch(impl_->cmd, groups_x, groups_y, groups_z);
  impl_->last_shader = p.name;
  ++n_dispatch_;
}

void Stream::barrier() {
  Context::Impl& m = ctx_->impl();
  if (!impl_->recording) return;  // nothing recorded yet: nothing to order
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  m.fn.vkCmdPipelineBarrier(impl_->cmd, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Stream::copy(const BufferRef& src, const BufferRef& dst) {
  Context::Impl& m = ctx_->impl();
  check_range(src, "copy source");
  check_range(dst, "copy destination");
  if (dst.size() < src.size()) fail("internal: copying ", src.size(), " bytes into ", dst.size());
  begin_if_needed(m, impl_->cmd, impl_->recording);
  VkBufferCopy region{src.offset, dst.offset, src.size()};
  m.fn.vkCmdCopyBuffer(impl_->cmd, reinterpret_cast<VkBuffer>(src.buffer->handle()),
                       reinterpret_cast<VkBuffer>(dst.buffer->handle()), 1, &region);
}

void Stream::fill_zero(const BufferRef& dst) {
  Context::Impl& m = ctx_->impl();
  check_range(dst, "fill");
  if (dst.offset % 4 || dst.size() % 4) fail("internal: zero-fill of a range not in whole 4-byte words");
  begin_if_needed(m, impl_->cmd, impl_->recording);
  m.fn.vkCmdFillBuffer(impl_->cmd, reinterpret_cast<VkBuffer>(dst.buffer->handle()), dst.offset, dst.size(), 0);
}

void Stream::run() {
  Context::Impl& m = ctx_->impl();
  if (!impl_->recording) return;
  // The host reads results after the wait: make every device write visible to it.
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  m.fn.vkCmdPipelineBarrier(impl_->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                            VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
  impl_->recording = false;
  vk_check(m.fn.vkEndCommandBuffer(impl_->cmd), "vkEndCommandBuffer", m.name);
  try {
    m.submit_and_wait(impl_->cmd, impl_->fence, impl_->last_shader.empty() ? "a command stream" : impl_->last_shader.c_str());
  } catch (const Error& e) {
    fail(e.what(), " (last shader recorded: ", impl_->last_shader.empty() ? "none" : impl_->last_shader, ")");
  }
  m.fn.vkResetCommandBuffer(impl_->cmd, 0);
  for (VkDescriptorPool p : impl_->desc_pools) m.fn.vkResetDescriptorPool(m.device, p, 0);
  impl_->desc_pool_used = 0;
  n_dispatch_ = 0;
}

}  // namespace moe::vk

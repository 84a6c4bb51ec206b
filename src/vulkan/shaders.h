// shaders.h: the compute shaders compiled into the binary. Every src/vulkan/shaders/*.comp file is
// compiled to SPIR-V by glslc at build time (cmake/vulkan_shaders.cmake) and embedded here, so the
// binary needs no shader files beside it and every shader is checked by the compiler on every build.
//
// A .comp file gives one shader named after the file's stem, or, when it has lines of the form
//   // @variant NAME -DDEFINE=VALUE ...
// one shader per such line, compiled with those defines (e.g. one matrix-product shader per weight type).
// Files ending in .glsl are include files (#include "x.glsl"), not shaders.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

namespace moe::vk {

struct ShaderCode {
  std::string_view name;
  std::span<const uint32_t> spirv;
};

// All embedded shaders, sorted by name.
std::span<const ShaderCode> embedded_shaders();
// The shader of that name, or nullptr.
const ShaderCode* find_shader(std::string_view name);

}  // namespace moe::vk

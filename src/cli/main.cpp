// main.cpp: the `moe` binary. Builds one CLI11 app from the registered subcommands (see command.h),
// runs the chosen one, and turns moe::Error into a one-line message and exit status 1. Also `moe help
// [SUBCOMMAND]`, `moe --version` (commit, build, the kernels this CPU gets) and the lookup of the bundled
// model relative to the binary, so an installed or copied `moe` finds it again.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "util/cpu.h"
#include "util/error.h"

// Written at build time by cmake/version_info.cmake (the git commit) and configure time (the build).
extern const char* const moe_git_commit;
extern const char* const moe_build_type;
extern const char* const moe_compiler;

// Where `cmake --install` puts the bundled model, relative to the installed binary's folder.
#ifndef MOE_INSTALL_MODELS_REL
#define MOE_INSTALL_MODELS_REL "../share/moe/models"
#endif

namespace moe::cli {

std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

std::string default_model_path() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("MOE_DEFAULT_MODEL");
  if (env && *env) return env;
  std::vector<fs::path> candidates;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / MOE_INSTALL_MODELS_REL / "stories260K-moe.gguf");
    candidates.push_back(exe.parent_path() / "../models/stories260K-moe.gguf");
    candidates.push_back(exe.parent_path() / "../../models/stories260K-moe.gguf");
    candidates.push_back(exe.parent_path() / "models/stories260K-moe.gguf");
  }
  candidates.push_back("models/stories260K-moe.gguf");
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return fs::weakly_canonical(c, ec).string();
  fail("no model given and the bundled default model (models/stories260K-moe.gguf) was not found; "
       "pass a GGUF file or set MOE_MODEL");
}

std::string model_or_default(const std::string& path) {
  if (!path.empty()) return path;
  const char* env = std::getenv("MOE_MODEL");
  if (env && *env) return env;
  return default_model_path();
}

namespace {

// What the kernels of each instruction-set level are (see src/quant/quant.cpp, lanes.cpp and
// src/kernels/attention.cpp for the dispatch).
const char* kernels_text(moe::Isa isa) {
  switch (isa) {
    case moe::Isa::AVX512:
      return "AVX-512 VNNI integer dot products, many-token sub-block lane kernels for prompts and batches, "
             "AVX2 attention";
    case moe::Isa::AVX2: return "AVX2 integer dot products (many-token kernels for prompts and batches) and attention";
    case moe::Isa::Scalar: return "the scalar reference kernels";
  }
  return "?";
}

std::string version_text() {
  const moe::Isa isa = moe::detected_isa();
  std::string s = std::string("moe 0.1.0\ncommit  ") + moe_git_commit + "\nbuild   " + moe_build_type + ", " +
                  moe_compiler + "\nkernels " + moe::isa_name(isa) + ": " + kernels_text(isa);
  const char* cap = std::getenv("MOE_ISA");
  if (cap && *cap) s += std::string(" (capped by MOE_ISA=") + cap + ")";
  s += "\ndevices CPU (weights mmap'd from the GGUF file); Vulkan with --device vulkan (moe info --devices)";
  return s;
}

const char* const kAppFooter =
    "Examples:\n"
    "  moe run                                   a story from the bundled model\n"
    "  moe run -m model.gguf -p \"Hello\" -n 64\n"
    "  moe chat -m model.gguf -c 8192\n"
    "  moe serve -m model.gguf -c 4096 -np 4 --host 127.0.0.1 --port 8080\n"
    "  moe plan model.gguf --serve -c 32768 -np 8    the KV pool `moe serve` would size\n"
    "Run `moe help SUBCOMMAND` (or `moe SUBCOMMAND --help`) for its options.\n"
    "Environment: MOE_MODEL (the model when none is given), MOE_HOST, MOE_PORT, MOE_API_KEY (serve),\n"
    "MOE_ISA=scalar|avx2 (cap the kernels).";

}  // namespace

}  // namespace moe::cli

int main(int argc, char** argv) {
  using namespace moe::cli;
  CLI::App app{"moe: run and serve Mixtral-family sparse Mixture-of-Experts models from GGUF files and Hugging Face checkpoints"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::function<std::string()>(version_text),
                       "Print the version, commit, build and the kernels this CPU uses, and exit");
  app.footer(kAppFooter);
  std::string help_topic;
  CLI::App* help = app.add_subcommand("help", "Show the help of moe or of one subcommand (moe help serve)");
  help->add_option("subcommand", help_topic, "a subcommand");
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    actions.emplace_back(sub, c.setup(*sub));
  }
  // `-np` (llama.cpp's spelling) becomes `--parallel` first: CLI11 short options are one letter.
  std::vector<std::string> args = translate_argv(argc, argv);
  std::vector<const char*> arg_ptrs;
  for (const auto& a : args) arg_ptrs.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (help->parsed()) {
    // The formatter directly: App::help() would show the help of the parsed subcommand, `help` itself.
    if (help_topic.empty()) {
      std::cout << app.get_formatter()->make_help(&app, "moe", CLI::AppFormatMode::Normal);
      return 0;
    }
    for (auto& [sub, action] : actions)
      if (sub->get_name() == help_topic) {
        std::cout << sub->help("moe");
        return 0;
      }
    std::cerr << "moe help: error: no subcommand '" << help_topic << "' (moe help lists them)\n";
    return 1;
  }
  for (auto& [sub, action] : actions) {
    if (!sub->parsed()) continue;
    try {
      return action();
    } catch (const moe::Error& e) {
      std::fflush(stdout);
      std::cerr << "moe " << sub->get_name() << ": error: " << e.what() << "\n";
      return 1;
    } catch (const std::bad_alloc&) {
      std::fflush(stdout);
      std::cerr << "moe " << sub->get_name() << ": error: out of memory\n";
      return 1;
    }
  }
  return 0;
}

// main.cpp: the `moe` binary. Builds one CLI11 app from the registered subcommands (see command.h),
// runs the chosen one, and turns moe::Error into a one-line message and exit status 1.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/command.h"
#include "util/error.h"

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
    candidates.push_back(exe.parent_path() / "../models/stories260K-moe.gguf");
    candidates.push_back(exe.parent_path() / "../../models/stories260K-moe.gguf");
    candidates.push_back(exe.parent_path() / "models/stories260K-moe.gguf");
  }
  candidates.push_back("models/stories260K-moe.gguf");
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return fs::weakly_canonical(c, ec).string();
  fail("no model given and the bundled default model (models/stories260K-moe.gguf) was not found; "
       "pass a GGUF file or set MOE_DEFAULT_MODEL");
}

std::string model_or_default(const std::string& path) { return path.empty() ? default_model_path() : path; }

}  // namespace moe::cli

int main(int argc, char** argv) {
  using namespace moe::cli;
  CLI::App app{"moe: run and serve Mixtral-family sparse Mixture-of-Experts models from GGUF files"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("moe 0.1.0"));
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    actions.emplace_back(sub, c.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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

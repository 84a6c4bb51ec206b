// command.h: how a subcommand joins the `moe` binary. Each src/cli/<name>.cpp defines one static
// Registrar; main.cpp builds the CLI11 app from all of them, so adding a subcommand touches one file.
//
//   static moe::cli::Registrar reg("info", "Print a model's architecture and tensors",
//       [](CLI::App& sub) {
//         auto opts = std::make_shared<Opts>();
//         sub.add_option("model", opts->model, "GGUF file");
//         return [opts] { return run_info(*opts); };   // the action; returns the exit code
//       });
//
// An action reports user errors by throwing moe::Error; main prints "moe <cmd>: error: <message>" and
// exits 1.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace moe::cli {

using Action = std::function<int()>;
using Setup = std::function<Action(CLI::App& sub)>;

struct Command {
  std::string name;
  std::string help;
  Setup setup;
};

std::vector<Command>& registry();

struct Registrar {
  Registrar(std::string name, std::string help, Setup setup) {
    registry().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

// The bundled default model (models/stories260K-moe.gguf): looked up through $MOE_DEFAULT_MODEL, then
// relative to the binary (../share/moe/models where `cmake --install` puts it, ../models, ../../models),
// then ./models. Throws moe::Error when not found.
std::string default_model_path();
// `path` if not empty, else $MOE_MODEL if set, else default_model_path().
std::string model_or_default(const std::string& path);

}  // namespace moe::cli

// `qgate serve`: loads the serve config (YAML, or the embedded default), starts one engine worker
// per variant, the routing store, health checks, the OpenAI API listener and the admin listener,
// and runs until SIGINT/SIGTERM, then shuts down gracefully.
#pragma once

#include <CLI/CLI.hpp>

namespace qgate {

void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace qgate

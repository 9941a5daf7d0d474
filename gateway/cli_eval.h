// `qgate eval`: perplexity of a model variant over a text file, and KL divergence / top-1
// agreement against a baseline variant.
#pragma once

#include <CLI/CLI.hpp>

namespace qgate {

void add_eval_command(CLI::App& app, int& exit_code);

}  // namespace qgate

// qgate: serve, compare and roll out quantized variants of an LLM.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "gateway/cli_eval.h"
#include "gateway/cli_generate.h"
#include "gateway/cli_plan.h"
#include "gateway/cli_quantize.h"
#include "gateway/cli_serve.h"

int main(int argc, char** argv) {
  // Logs go to stderr so stdout carries only model output.
  spdlog::set_default_logger(spdlog::stderr_color_mt("qgate"));
  spdlog::set_pattern("%^[%L]%$ %v");
  CLI::App app{"qgate: serve, compare and roll out quantized variants of an LLM"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qgate " QGATE_VERSION);
  int exit_code = 0;
  qgate::add_generate_commands(app, exit_code);
  qgate::add_eval_command(app, exit_code);
  qgate::add_quantize_command(app, exit_code);
  qgate::add_serve_command(app, exit_code);
  qgate::add_plan_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}

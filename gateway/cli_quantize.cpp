#include "gateway/cli_quantize.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <string>

#include "engine/quantize_pipeline.h"

namespace qgate {

namespace {

struct QuantizeArgs {
  QuantizeOptions options;
  std::string method = "gptq";
  bool asym = false;
};

int run_quantize(QuantizeArgs& a) {
  auto method = parse_quantize_method(a.method);
  if (!method.ok()) {
    spdlog::error("{}", method.error().to_string());
    return 2;
  }
  a.options.method = *method;
  if (a.asym) a.options.sym = false;
  if (Status st = check_quantize_options(a.options); !st.ok()) {
    spdlog::error("{}", st.error().to_string());
    return 2;
  }
  auto report = quantize_model(a.options, [](std::string_view line) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
  });
  if (!report.ok()) {
    spdlog::error("quantize failed: {}", report.error().to_string());
    return 1;
  }
  std::fprintf(stderr, "[quantize] wrote %s (%s) in %.1fs\n", a.options.output.c_str(),
               quantize_method_name(a.options.method), report->seconds);
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<QuantizeArgs>();
  QuantizeOptions& o = args->options;
  o.calib_file = "models/corpus/calib.txt";
  CLI::App* cmd = app.add_subcommand(
      "quantize", "Write a GPTQ/AWQ/RTN/FP16 HF checkpoint directory from a GGUF or HF model");
  cmd->add_option("--input", o.input, "GGUF file or HF model directory")->required();
  cmd->add_option("--output", o.output, "output directory")->required();
  cmd->add_option("--method", args->method, "fp16 | rtn | gptq | awq")->capture_default_str();
  cmd->add_option("--bits", o.bits, "bits per weight (4 or 8)")->capture_default_str();
  cmd->add_option("--group-size", o.group_size, "columns per group, -1 = per channel")
      ->capture_default_str();
  cmd->add_flag("--sym", o.sym, "symmetric quantization (default asymmetric)");
  cmd->add_flag("--asym", args->asym, "asymmetric quantization with zero points (default)");
  cmd->add_flag("--desc-act", o.desc_act, "GPTQ act-order (columns by descending Hessian diag)");
  cmd->add_option("--damp", o.damp, "GPTQ dampening, fraction of mean diag(H)")
      ->capture_default_str();
  cmd->add_option("--calib", o.calib_file, "calibration text (never the eval text)")
      ->capture_default_str();
  cmd->add_option("--calib-samples", o.calib_samples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-seqlen", o.calib_seqlen, "tokens per window")->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed for the window offsets")->capture_default_str();
  cmd->add_option("--threads", o.threads, "worker threads")->capture_default_str();
  cmd->add_flag("--overwrite", o.overwrite, "replace an existing output directory");
  cmd->callback([args, &exit_code] { exit_code = run_quantize(*args); });
}

}  // namespace qgate

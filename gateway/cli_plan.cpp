#include "gateway/cli_plan.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/device_spec.h"
#include "engine/gpu_memory_plan.h"
#include "engine/model_loader.h"
#include "gateway/serve_config.h"
#include "kernels/cuda/device.h"

namespace qgate {

namespace {

struct PlanArgs {
  std::string config_file;
  std::string gpu_memory;
};

// "80GiB", "24GB", "512MiB", "1073741824": binary (GiB/MiB) and decimal (GB/MB) units.
std::optional<uint64_t> parse_bytes(const std::string& s) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end == s.data()) return std::nullopt;
  const std::string unit(end, s.data() + s.size());
  const std::pair<const char*, uint64_t> units[] = {
      {"", 1}, {"B", 1}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},
      {"KB", 1000}, {"MB", 1000'000}, {"GB", 1000'000'000}};
  for (const auto& [name, scale] : units) {
    if (unit == name) return n * scale;
  }
  return std::nullopt;
}

double mb(uint64_t b) { return static_cast<double>(b) / 1e6; }

int run_plan(const PlanArgs& a) {
  auto config = load_cli_config(a.config_file);
  if (!config.ok()) {
    spdlog::error("config: {}", config.error().message());
    return 2;
  }
  std::optional<uint64_t> hypothetical;
  if (!a.gpu_memory.empty()) {
    hypothetical = parse_bytes(a.gpu_memory);
    if (!hypothetical) {
      spdlog::error("--gpu-memory: expected a size like 80GiB, 24GB or 512MiB, got '{}'",
                    a.gpu_memory);
      return 2;
    }
  }
  const std::vector<CudaDeviceInfo> gpus = cuda_devices();
  std::vector<GpuMemoryDemand> on_gpus;
  std::vector<GpuMemoryDemand> all;
  std::printf("%-24s %-8s %12s %12s %12s %12s\n", "variant", "device", "weights MB", "KV MB",
              "workspace MB", "total MB");
  for (const VariantConfig& v : config->variants) {
    auto device = resolve_device(v.device, cuda_built(), gpus);
    if (!device.ok() && !hypothetical) {
      spdlog::error("variant {}: device {}: {}", v.name, v.device.to_string(),
                    device.error().message());
      return 2;
    }
    auto model = load_model(v.model.string());
    if (!model.ok()) {
      spdlog::error("variant {}: cannot load {}: {}", v.name, v.model.string(),
                    model.error().to_string());
      return 2;
    }
    // With --gpu-memory every variant is planned onto that one GPU; otherwise as configured.
    const int index = hypothetical ? 0 : (device->is_cuda() ? device->index : 0);
    const GpuMemoryDemand d = gpu_memory_demand(v.name, index, *model->model, v.worker);
    const std::string where = hypothetical ? "cuda:0" : device->to_string();
    std::printf("%-24s %-8s %12.1f %12.1f %12.1f %12.1f\n", v.name.c_str(), where.c_str(),
                mb(d.weight_bytes), mb(d.kv_cache_bytes), mb(d.workspace_bytes), mb(d.total()));
    all.push_back(d);
    if (!hypothetical && device->is_cuda()) on_gpus.push_back(d);
  }
  Status fits = Status::Ok();
  if (hypothetical) {
    const std::vector<GpuMemoryBudget> one = {{0, "--gpu-memory", *hypothetical, *hypothetical}};
    fits = check_gpu_memory(all, one, kGpuMemoryReserveBytes);
  } else if (!on_gpus.empty()) {
    auto budgets = cuda_memory_budgets(on_gpus);
    if (!budgets.ok()) {
      spdlog::error("GPU memory: {}", budgets.error().to_string());
      return 2;
    }
    fits = check_gpu_memory(on_gpus, budgets.value(), kGpuMemoryReserveBytes);
  } else {
    std::printf("no variant is placed on a GPU (give --gpu-memory to plan for one)\n");
    return 0;
  }
  if (!fits.ok()) {
    std::printf("does not fit: %s\n", fits.error().message().c_str());
    return 1;
  }
  std::printf("fits, with %.0f MB kept in reserve per device\n", mb(kGpuMemoryReserveBytes));
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "plan", "Show the GPU memory each variant needs (weights, KV cache, workspace) and whether "
              "they fit their devices, or a GPU of --gpu-memory");
  auto a = std::make_shared<PlanArgs>();
  cmd->add_option("-c,--config", a->config_file, "YAML config (default: the embedded config)");
  cmd->add_option("--gpu-memory", a->gpu_memory,
                  "plan every variant onto one GPU with this much free memory (e.g. 24GiB)");
  cmd->callback([&exit_code, a] { exit_code = run_plan(*a); });
}

}  // namespace qgate

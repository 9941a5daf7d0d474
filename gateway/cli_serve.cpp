#include "gateway/cli_serve.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <csignal>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "engine/device_spec.h"
#include "engine/gpu_memory_plan.h"
#include "engine/model_loader.h"
#include "kernels/cuda/device.h"
#include "engine/worker.h"
#include "gateway/admin_api.h"
#include "gateway/eval_results.h"
#include "gateway/feedback_api.h"
#include "gateway/gateway_metrics.h"
#include "gateway/http_server.h"
#include "gateway/openai_routes.h"
#include "gateway/routed_service.h"
#include "gateway/routing_store.h"
#include "gateway/serve_config.h"
#include "gateway/serving_state_metrics.h"
#include "gateway/shadow_scorer.h"
#include "policies/outlier_detector.h"
#include "policies/retry_budget.h"

namespace qgate {

namespace {

struct ServeArgs {
  std::string config_file;
  std::string ready_file;
  bool print_default_config = false;
  bool enable_test_faults = false;
};

HttpServerLimits http_limits(const HttpLimits& l) {
  HttpServerLimits h;
  h.max_header_bytes = l.max_header_bytes;
  h.max_body_bytes = l.max_body_bytes;
  h.read_timeout = l.read_timeout;
  h.idle_timeout = l.idle_timeout;
  h.write_timeout = l.write_timeout;
  return h;
}

// The ports as bound, for tests and scripts that start the server on port 0. Written atomically
// so a reader never sees half a file.
bool write_ready_file(const std::string& path, uint16_t api_port, uint16_t admin_port) {
  boost::json::object o;
  o["api_port"] = api_port;
  o["admin_port"] = admin_port;
  o["pid"] = static_cast<int64_t>(::getpid());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << boost::json::serialize(o) << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int run_serve(const ServeArgs& a) {
  if (a.print_default_config) {
    std::fwrite(embedded_default_config().data(), 1, embedded_default_config().size(), stdout);
    return 0;
  }
  // Signals are taken by sigwait() on this thread; every thread started below inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = load_cli_config(a.config_file);
  if (!config.ok()) {
    spdlog::error("config: {}", config.error().message());
    return 2;
  }
  const ServeConfig& cfg = config.value();
  auto token = load_admin_token(cfg.admin_token);
  if (!token.ok()) {
    spdlog::error("admin token: {}", token.error().message());
    return 2;
  }

  // Devices first: every variant's device resolved, and the GPU memory of all variants that share
  // a device checked against what it has free, before any weights are uploaded.
  const std::vector<CudaDeviceInfo> gpus = cuda_devices();
  std::vector<DeviceSpec> devices;
  for (const VariantConfig& v : cfg.variants) {
    auto d = resolve_device(v.device, cuda_built(), gpus);
    if (!d.ok()) {
      spdlog::error("variant {}: device {}: {}", v.name, v.device.to_string(), d.error().message());
      return 2;
    }
    devices.push_back(d.value());
  }
  std::vector<LoadedModel> models;
  std::vector<GpuMemoryDemand> demands;
  for (size_t i = 0; i < cfg.variants.size(); ++i) {
    const VariantConfig& v = cfg.variants[i];
    auto model = load_model(v.model.string());
    if (!model.ok()) {
      spdlog::error("variant {}: cannot load {}: {}", v.name, v.model.string(),
                    model.error().to_string());
      return 2;
    }
    if (devices[i].is_cuda()) {
      demands.push_back(
          gpu_memory_demand(v.name, devices[i].index, *model.value().model, v.worker));
    }
    models.push_back(std::move(model).value());
  }
  if (!demands.empty()) {
    auto budgets = cuda_memory_budgets(demands);
    if (!budgets.ok()) {
      spdlog::error("GPU memory: {}", budgets.error().to_string());
      return 2;
    }
    for (const GpuMemoryDemand& d : demands) {
      spdlog::info("variant {} on cuda:{}: {:.0f} MB weights, {:.0f} MB KV cache, {:.0f} MB "
                   "workspace",
                   d.variant, d.device, static_cast<double>(d.weight_bytes) / 1e6,
                   static_cast<double>(d.kv_cache_bytes) / 1e6,
                   static_cast<double>(d.workspace_bytes) / 1e6);
    }
    const Status fits = check_gpu_memory(demands, budgets.value(), kGpuMemoryReserveBytes);
    if (!fits.ok()) {
      spdlog::error("GPU memory: {}", fits.error().message());
      return 2;
    }
  }

  std::vector<std::unique_ptr<Worker>> workers;
  std::map<std::string, Worker*, std::less<>> by_name;
  std::map<std::string, WorkerDescription, std::less<>> described;
  for (size_t i = 0; i < cfg.variants.size(); ++i) {
    const VariantConfig& v = cfg.variants[i];
    LoadedModel& model = models[i];
    const std::string describe = model.model->describe();
    const double weight_mb = static_cast<double>(model.model->weight_bytes()) / 1e6;
    WorkerOptions options = v.worker;
    options.device = devices[i];
    auto worker = Worker::create(v.name, std::move(model), options);
    if (!worker.ok()) {
      spdlog::error("variant {}: {}", v.name, worker.error().to_string());
      return 2;
    }
    spdlog::info("variant {}: {} on {} ({}, {:.0f} MB of weights)", v.name, v.model.string(),
                 devices[i].to_string(), describe, weight_mb);
    by_name.emplace(v.name, worker.value().get());
    described.emplace(v.name,
                      WorkerDescription{worker.value().get(), devices[i].to_string(), describe});
    workers.push_back(std::move(worker).value());
  }

  RoutingStoreOptions so;
  so.dir = cfg.state_dir;
  so.variants = cfg.variant_names();
  so.initial_routes = cfg.routes;
  auto store = RoutingStore::open(so);
  if (!store.ok()) {
    spdlog::error("routing store {}: {}", cfg.state_dir.string(), store.error().to_string());
    return 2;
  }
  OutlierDetector detector(cfg.health.outlier, SteadyClock::instance());
  for (const std::string& v : store.value()->drained()) detector.set_drained(v, true);
  RetryBudget budget(cfg.retry);

  // Observability (docs/METRICS.md): recorded metrics, scrape-time collectors, offline eval
  // gauges, the shadow scorer and the response index behind POST /v1/feedback.
  GatewayMetrics metrics;
  for (const Route& r : store.value()->current()->routes) {
    for (const std::string& v : cfg.variant_names()) {
      if (r.serves(v)) metrics.declare(r.model, v);
    }
  }
  {
    RoutingStore* s = store.value().get();
    metrics.add_collector([s] { return routing_table_metrics(*s->current()); });
    metrics.add_collector([&detector, names = cfg.variant_names()] {
      return variant_health_metrics(detector, names);
    });
    metrics.add_collector([&described] { return worker_metrics(described); });
  }
  auto reload_quality = [&metrics, &cfg]() -> Result<std::string> {
    QGATE_ASSIGN_OR_RETURN(MatchedEvalResults r,
                           load_eval_results(cfg.quality.eval_results, cfg.variants));
    const double now = std::chrono::duration<double>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
    metrics.set_eval_results(r.variants, now);
    boost::json::object o;
    boost::json::array matched;
    for (const VariantEvalMetrics& m : r.variants) matched.push_back(boost::json::value(m.variant));
    boost::json::array unmatched;
    for (const std::string& m : r.unmatched_models) unmatched.push_back(boost::json::value(m));
    o["variants"] = std::move(matched);
    o["unmatched"] = std::move(unmatched);
    return boost::json::serialize(o);
  };
  if (!cfg.quality.eval_results.empty()) {
    std::error_code ec;
    if (std::filesystem::exists(cfg.quality.eval_results, ec)) {
      auto loaded = reload_quality();
      if (!loaded.ok()) {
        // Stale or broken quality numbers must not keep the server down; say so and go on.
        spdlog::warn("quality.eval_results: {}", loaded.error().message());
      } else {
        spdlog::info("offline eval results from {}: {}", cfg.quality.eval_results.string(),
                     loaded.value());
      }
    } else {
      spdlog::info("quality.eval_results {} does not exist yet; POST /admin/quality/reload once "
                   "it does", cfg.quality.eval_results.string());
    }
  }
  ResponseIndex responses(static_cast<size_t>(cfg.feedback.max_tracked_responses));
  std::unique_ptr<ShadowScorer> shadow;
  if (cfg.shadow.sample_ratio > 0) {
    ShadowScorerOptions so;
    so.queue_capacity = static_cast<size_t>(cfg.shadow.queue_capacity);
    so.threads = cfg.shadow.threads;
    shadow = std::make_unique<ShadowScorer>(
        so, [&metrics](const ShadowJob& job, const Result<ContinuationScore>& score) {
          if (score.ok()) {
            metrics.shadow_scored(job.route, job.variant, score.value().token_nll,
                                  score.value().top1_agreements);
          } else if (score.error().code() != ErrorCode::kCancelled) {
            spdlog::warn("shadow scoring of a {} response failed: {}", job.variant,
                         score.error().to_string());
            metrics.shadow_outcome(job.route, job.variant, "error");
          }
        });
    metrics.add_collector([s = shadow.get()] {
      auto depth = gauge_family("qgate_shadow_queue_depth", "Responses waiting to be scored");
      add_sample(depth, {}, static_cast<double>(s->queue_depth()));
      return std::vector<prometheus::MetricFamily>{std::move(depth)};
    });
  }

  RoutedServiceOptions ro;
  ro.first_byte_timeout = cfg.http.first_byte_timeout;
  ro.request_timeout = cfg.http.request_timeout;
  ro.probe_interval = cfg.health.probe_interval;
  ro.probe_timeout = cfg.health.probe_timeout;
  ServiceTelemetry telemetry;
  telemetry.metrics = &metrics;
  telemetry.responses = &responses;
  telemetry.shadow = shadow.get();
  telemetry.shadow_sample_ratio = cfg.shadow.sample_ratio;
  telemetry.shadow_include_baseline = cfg.shadow.include_baseline;
  auto service = std::make_shared<RoutedCompletionService>(by_name, *store.value(), detector,
                                                           budget, ro, telemetry);

  // /readyz: ready while some variant can take traffic.
  auto ready = [&detector, &by_name](const HttpRequest&) {
    HttpResponse r;
    for (const auto& [name, worker] : by_name) {
      if (detector.routable(name)) {
        r.body = R"({"status":"ready"})";
        return r;
      }
    }
    r.status = 503;
    r.body = R"({"status":"no variant can take traffic"})";
    return r;
  };
  auto alive = [](const HttpRequest&) {
    HttpResponse r;
    r.body = R"({"status":"ok"})";
    return r;
  };

  HttpRouter api_router;
  OpenAiApiOptions api_options;
  api_options.on_invalid_request = [&metrics, s = store.value().get()](std::string_view model,
                                                                      unsigned status) {
    // Only configured route names become label values; anything else is "unknown".
    const bool known = !model.empty() && s->current()->find(model) != nullptr;
    metrics.request_finished(known ? model : "unknown", "none", status);
  };
  add_openai_routes(api_router, service, api_options);
  add_feedback_route(api_router, responses, metrics);
  api_router.add_simple(boost::beast::http::verb::get, "/healthz", alive);
  api_router.add_simple(boost::beast::http::verb::get, "/readyz", ready);
  HttpServerOptions api_opts;
  api_opts.name = "api";
  api_opts.host = cfg.api.host;
  api_opts.port = cfg.api.port;
  api_opts.limits = http_limits(cfg.http);
  auto api = HttpServer::start(api_opts, std::move(api_router));
  if (!api.ok()) {
    spdlog::error("api listener {}:{}: {}", cfg.api.host, cfg.api.port, api.error().to_string());
    return 2;
  }

  HttpRouter admin_router;
  AdminApiContext ac;
  ac.token = token.value();
  ac.store = store.value().get();
  ac.detector = &detector;
  ac.service = service.get();
  ac.workers = by_name;
  ac.allow_faults = a.enable_test_faults;
  if (!cfg.quality.eval_results.empty()) ac.reload_quality = reload_quality;
  add_admin_routes(admin_router, ac);
  // Unauthenticated like /healthz: scrapers should not need the admin secret, and the admin
  // listener is where operators already limit who can connect.
  admin_router.add_simple(boost::beast::http::verb::get, "/metrics",
                          [&metrics](const HttpRequest&) {
                            HttpResponse r;
                            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                            r.body = metrics.serialize();
                            return r;
                          });
  admin_router.add_simple(boost::beast::http::verb::get, "/healthz", alive);
  HttpServerOptions admin_opts;
  admin_opts.name = "admin";
  admin_opts.host = cfg.admin.host;
  admin_opts.port = cfg.admin.port;
  admin_opts.threads = 1;
  admin_opts.limits = http_limits(cfg.http);
  auto admin = HttpServer::start(admin_opts, std::move(admin_router));
  if (!admin.ok()) {
    spdlog::error("admin listener {}:{}: {}", cfg.admin.host, cfg.admin.port,
                  admin.error().to_string());
    return 2;
  }
  spdlog::info("serving the OpenAI API on http://{}:{} and the admin API on http://{}:{} "
               "(routing version {})",
               cfg.api.host, api.value()->port(), cfg.admin.host, admin.value()->port(),
               store.value()->current()->version);
  if (a.enable_test_faults) spdlog::warn("test fault injection is enabled (POST /admin/fault)");
  if (!a.ready_file.empty() &&
      !write_ready_file(a.ready_file, api.value()->port(), admin.value()->port())) {
    spdlog::error("cannot write {}", a.ready_file);
    return 2;
  }

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: draining (grace {} ms)", sig,
               std::chrono::duration_cast<std::chrono::milliseconds>(cfg.http.shutdown_grace).count());
  api.value()->shutdown(cfg.http.shutdown_grace);
  admin.value()->shutdown(std::chrono::seconds(1));
  service.reset();
  if (shadow) shadow->stop();  // queued scores would only delay the exit
  workers.clear();  // ends whatever is still queued with Cancelled
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "serve", "Serve the OpenAI-compatible API over the configured variants, with the admin API");
  auto a = std::make_shared<ServeArgs>();
  cmd->add_option("-c,--config", a->config_file,
                  "YAML config (default: the embedded config serving the three SmolLM2 variants "
                  "from $QGATE_MODEL_DIR/variants)");
  cmd->add_option("--ready-file", a->ready_file,
                  "once listening, write {\"api_port\", \"admin_port\", \"pid\"} here (JSON)");
  cmd->add_flag("--print-default-config", a->print_default_config,
                "print the embedded default config and exit");
  cmd->add_flag("--enable-test-faults", a->enable_test_faults,
                "allow POST /admin/fault to make a variant fail, hang or overload (tests only)");
  cmd->callback([&exit_code, a] { exit_code = run_serve(*a); });
}

}  // namespace qgate

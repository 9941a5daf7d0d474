// YAML serve config. See serve_config.h for the format and the error contract.
#include "gateway/serve_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_set>

namespace qgate {
namespace {

// Field access with the YAML path carried along, so every error names where it happened.
// yaml-cpp's const operator[] never throws for a missing key; the throwing calls (as<>, Load)
// are not used on values -- scalars are parsed here with from_chars.
struct Field {
  YAML::Node node;
  std::string path;

  bool present() const { return node.IsDefined() && !node.IsNull(); }
  Field child(const std::string& key) const {
    return {node[key], path.empty() ? key : path + "." + key};
  }
  Field item(size_t i) const { return {node[i], path + "[" + std::to_string(i) + "]"}; }
};

Error config_error(const Field& f, std::string_view what) {
  std::string msg = f.path + ": " + std::string(what);
  if (f.node.IsDefined() && f.node.Mark().line >= 0) {
    msg += " (line " + std::to_string(f.node.Mark().line + 1) + ")";
  }
  return make_error(ErrorCode::kInvalidArgument, std::move(msg));
}

Status expect_map(const Field& f, std::initializer_list<std::string_view> allowed) {
  if (!f.node.IsMap()) return config_error(f, "must be a mapping");
  for (const auto& kv : f.node) {
    if (!kv.first.IsScalar()) return config_error(f, "keys must be plain names");
    const std::string& key = kv.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return config_error(Field{kv.first, f.path.empty() ? key : f.path + "." + key},
                          "unknown key (expected one of: " + list + ")");
    }
  }
  return Status::Ok();
}

Result<std::string> get_string(const Field& f) {
  if (!f.node.IsScalar()) return config_error(f, "must be a string");
  if (f.node.Scalar().empty()) return config_error(f, "must not be empty");
  return f.node.Scalar();
}

Result<int64_t> get_int(const Field& f, int64_t min, int64_t max) {
  if (!f.node.IsScalar()) return config_error(f, "must be an integer");
  const std::string& s = f.node.Scalar();
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return config_error(f, "must be an integer, got '" + s + "'");
  }
  if (v < min) return config_error(f, "must be >= " + std::to_string(min));
  if (v > max) return config_error(f, "must be <= " + std::to_string(max));
  return v;
}

Result<double> get_number(const Field& f) {
  if (!f.node.IsScalar()) return config_error(f, "must be a number");
  const std::string& s = f.node.Scalar();
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    return config_error(f, "must be a number, got '" + s + "'");
  }
  return v;
}

Result<bool> get_bool(const Field& f) {
  if (f.node.IsScalar()) {
    if (f.node.Scalar() == "true") return true;
    if (f.node.Scalar() == "false") return false;
  }
  return config_error(f, "must be true or false");
}

Result<Duration> get_duration(const Field& f) {
  if (!f.node.IsScalar()) return config_error(f, "must be a duration such as \"30s\"");
  const std::string& s = f.node.Scalar();
  int64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  const std::string_view unit(end, static_cast<size_t>(s.data() + s.size() - end));
  if (ec != std::errc() || n < 0) {
    return config_error(f, "must be a non-negative duration such as \"30s\", got '" + s + "'");
  }
  using namespace std::chrono;
  // Capped at a day: beyond that a timeout is a typo, and the cap keeps the multiply in range.
  constexpr int64_t kMaxSeconds = 24 * 3600;
  int64_t per_unit_ms = 0;
  if (unit == "ms")
    per_unit_ms = 1;
  else if (unit == "s")
    per_unit_ms = 1000;
  else if (unit == "m")
    per_unit_ms = 60 * 1000;
  else if (unit == "h")
    per_unit_ms = 3600 * 1000;
  else
    return config_error(f, "needs a unit ms, s, m or h (e.g. \"30s\"), got '" + s + "'");
  if (n > kMaxSeconds * 1000 / per_unit_ms) return config_error(f, "must be at most 24h");
  return duration_cast<Duration>(milliseconds(n * per_unit_ms));
}

// Runs `parse` on the field only when present; otherwise the default stays.
template <typename T, typename F>
Status optional(const Field& f, T& out, F&& parse) {
  if (!f.present()) return Status::Ok();
  QGATE_ASSIGN_OR_RETURN(out, parse(f));
  return Status::Ok();
}

bool valid_variant_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Status parse_listen(const Field& f, ListenConfig& out) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(expect_map(f, {"host", "port"}));
  QGATE_TRY_STATUS(optional(f.child("host"), out.host, get_string));
  int64_t port = out.port;
  QGATE_TRY_STATUS(
      optional(f.child("port"), port, [](const Field& p) { return get_int(p, 0, 65535); }));
  out.port = static_cast<uint16_t>(port);
  return Status::Ok();
}

Status parse_http(const Field& f, HttpLimits& out) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(
      expect_map(f, {"max_header_bytes", "max_body_bytes", "read_timeout", "write_timeout",
                     "idle_timeout", "first_byte_timeout", "request_timeout", "shutdown_grace"}));
  auto bytes = [](const Field& b) -> Result<size_t> {
    QGATE_ASSIGN_OR_RETURN(int64_t v, get_int(b, 1, int64_t{1} << 40));
    return static_cast<size_t>(v);
  };
  QGATE_TRY_STATUS(optional(f.child("max_header_bytes"), out.max_header_bytes, bytes));
  QGATE_TRY_STATUS(optional(f.child("max_body_bytes"), out.max_body_bytes, bytes));
  auto positive = [](const Field& d) -> Result<Duration> {
    QGATE_ASSIGN_OR_RETURN(Duration v, get_duration(d));
    if (v <= Duration::zero()) return config_error(d, "must be > 0");
    return v;
  };
  QGATE_TRY_STATUS(optional(f.child("read_timeout"), out.read_timeout, positive));
  QGATE_TRY_STATUS(optional(f.child("write_timeout"), out.write_timeout, positive));
  QGATE_TRY_STATUS(optional(f.child("idle_timeout"), out.idle_timeout, positive));
  QGATE_TRY_STATUS(optional(f.child("first_byte_timeout"), out.first_byte_timeout, positive));
  QGATE_TRY_STATUS(optional(f.child("request_timeout"), out.request_timeout, positive));
  QGATE_TRY_STATUS(optional(f.child("shutdown_grace"), out.shutdown_grace, get_duration));
  return Status::Ok();
}

Status parse_worker(const Field& f, WorkerOptions& w) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(
      expect_map(f, {"threads", "max_running", "max_batched_tokens", "kv_block_tokens",
                     "kv_cache_tokens", "kv_cache_dtype", "max_queued", "max_context_tokens",
                     "prefix_caching"}));
  constexpr int64_t kBig = int64_t{1} << 31;
  auto at_least = [](int64_t min) {
    return [min](const Field& x) { return get_int(x, min, kBig); };
  };
  int64_t threads = w.threads;
  QGATE_TRY_STATUS(
      optional(f.child("threads"), threads, [](const Field& x) { return get_int(x, 0, 1024); }));
  w.threads = static_cast<int>(threads);
  QGATE_TRY_STATUS(optional(f.child("max_running"), w.max_running, at_least(1)));
  QGATE_TRY_STATUS(optional(f.child("max_batched_tokens"), w.max_batched_tokens, at_least(1)));
  QGATE_TRY_STATUS(optional(f.child("kv_block_tokens"), w.kv_block_tokens, at_least(1)));
  QGATE_TRY_STATUS(optional(f.child("kv_cache_tokens"), w.kv_cache_tokens, at_least(1)));
  QGATE_TRY_STATUS(optional(f.child("max_queued"), w.max_queued, at_least(0)));
  QGATE_TRY_STATUS(optional(f.child("max_context_tokens"), w.max_context_tokens, at_least(1)));
  QGATE_TRY_STATUS(optional(f.child("prefix_caching"), w.prefix_caching, get_bool));
  QGATE_TRY_STATUS(optional(f.child("kv_cache_dtype"), w.kv_cache_dtype,
                            [](const Field& x) -> Result<KvDType> {
                              QGATE_ASSIGN_OR_RETURN(std::string name, get_string(x));
                              const auto dtype = parse_kv_dtype(name);
                              if (!dtype) {
                                return config_error(x, "must be f32 or f16, got '" + name + "'");
                              }
                              return *dtype;
                            }));
  if (w.kv_cache_tokens < w.kv_block_tokens) {
    return config_error(f.child("kv_cache_tokens"), "must be >= kv_block_tokens");
  }
  return Status::Ok();
}

Result<VariantConfig> parse_variant(const Field& f, const std::filesystem::path& models_dir) {
  QGATE_TRY_STATUS(expect_map(f, {"name", "model", "device", "worker"}));
  VariantConfig v;
  if (!f.child("name").present()) return config_error(f.child("name"), "is required");
  QGATE_ASSIGN_OR_RETURN(v.name, get_string(f.child("name")));
  if (!valid_variant_name(v.name)) {
    return config_error(f.child("name"), "may hold only letters, digits, '.', '_' and '-'");
  }
  if (!f.child("model").present()) return config_error(f.child("model"), "is required");
  QGATE_ASSIGN_OR_RETURN(std::string model, get_string(f.child("model")));
  v.model = std::filesystem::path(model).is_absolute() ? std::filesystem::path(model)
                                                       : models_dir / model;
  if (f.child("device").present()) {
    QGATE_ASSIGN_OR_RETURN(std::string device, get_string(f.child("device")));
    auto spec = parse_device_spec(device);
    if (!spec.ok()) return config_error(f.child("device"), spec.error().message());
    v.device = spec.value();
  }
  QGATE_TRY_STATUS(parse_worker(f.child("worker"), v.worker));
  return v;
}

Result<Route> parse_route(const Field& f) {
  QGATE_TRY_STATUS(
      expect_map(f, {"model", "weights", "baseline", "fallback", "sticky", "override_header"}));
  Route r;
  if (!f.child("model").present()) return config_error(f.child("model"), "is required");
  QGATE_ASSIGN_OR_RETURN(r.model, get_string(f.child("model")));
  const Field weights = f.child("weights");
  if (!weights.present()) return config_error(weights, "is required");
  if (!weights.node.IsMap()) return config_error(weights, "must map variant names to weights");
  for (const auto& kv : weights.node) {
    const std::string name = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    const Field w{kv.second, weights.path + "." + name};
    QGATE_ASSIGN_OR_RETURN(const double weight, get_number(w));
    if (weight < 0.0) return config_error(w, "must be >= 0");
    r.weights.push_back({name, weight});
  }
  if (!f.child("baseline").present()) return config_error(f.child("baseline"), "is required");
  QGATE_ASSIGN_OR_RETURN(r.baseline, get_string(f.child("baseline")));
  const Field fallback = f.child("fallback");
  if (fallback.present()) {
    if (!fallback.node.IsSequence()) return config_error(fallback, "must be a list of variants");
    for (size_t i = 0; i < fallback.node.size(); ++i) {
      QGATE_ASSIGN_OR_RETURN(std::string v, get_string(fallback.item(i)));
      r.fallback.push_back(std::move(v));
    }
  } else {
    r.fallback.push_back(r.baseline);  // the safe default: fall back to the reference variant
  }
  const Field sticky = f.child("sticky");
  if (sticky.present()) {
    QGATE_TRY_STATUS(expect_map(sticky, {"header", "user"}));
    QGATE_TRY_STATUS(optional(sticky.child("header"), r.sticky.header, get_string));
    QGATE_TRY_STATUS(optional(sticky.child("user"), r.sticky.user, get_bool));
  }
  QGATE_TRY_STATUS(optional(f.child("override_header"), r.override_header, get_string));
  return r;
}

Status parse_health(const Field& f, HealthConfig& h) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(
      expect_map(f, {"probe_interval", "probe_timeout", "consecutive_failures", "base_ejection",
                     "max_ejection", "half_open_successes", "half_open_max_trials"}));
  auto positive = [](const Field& d) -> Result<Duration> {
    QGATE_ASSIGN_OR_RETURN(Duration v, get_duration(d));
    if (v <= Duration::zero()) return config_error(d, "must be > 0");
    return v;
  };
  auto count = [](const Field& x) -> Result<int> {
    QGATE_ASSIGN_OR_RETURN(int64_t v, get_int(x, 1, 1000000));
    return static_cast<int>(v);
  };
  QGATE_TRY_STATUS(optional(f.child("probe_interval"), h.probe_interval, positive));
  QGATE_TRY_STATUS(optional(f.child("probe_timeout"), h.probe_timeout, positive));
  QGATE_TRY_STATUS(
      optional(f.child("consecutive_failures"), h.outlier.consecutive_failures, count));
  QGATE_TRY_STATUS(optional(f.child("base_ejection"), h.outlier.base_ejection, positive));
  QGATE_TRY_STATUS(optional(f.child("max_ejection"), h.outlier.max_ejection, positive));
  QGATE_TRY_STATUS(optional(f.child("half_open_successes"), h.outlier.half_open_successes, count));
  QGATE_TRY_STATUS(
      optional(f.child("half_open_max_trials"), h.outlier.half_open_max_trials, count));
  if (h.outlier.max_ejection < h.outlier.base_ejection) {
    return config_error(f.child("max_ejection"), "must be >= base_ejection");
  }
  return Status::Ok();
}

Status parse_retry(const Field& f, RetryBudgetOptions& r) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(expect_map(f, {"max_attempts", "budget_ratio", "min_retries"}));
  int64_t attempts = r.max_attempts;
  QGATE_TRY_STATUS(optional(f.child("max_attempts"), attempts,
                            [](const Field& x) { return get_int(x, 1, 16); }));
  r.max_attempts = static_cast<int>(attempts);
  QGATE_TRY_STATUS(optional(f.child("min_retries"), r.min_retries,
                            [](const Field& x) { return get_int(x, 0, 1000000); }));
  const Field ratio = f.child("budget_ratio");
  if (ratio.present()) {
    QGATE_ASSIGN_OR_RETURN(r.ratio, get_number(ratio));
    if (r.ratio < 0.0 || r.ratio > 1.0) return config_error(ratio, "must be in [0, 1]");
  }
  return Status::Ok();
}

Status parse_quality(const Field& f, const std::filesystem::path& models_dir, QualityConfig& q) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(expect_map(f, {"eval_results"}));
  std::string file;
  QGATE_TRY_STATUS(optional(f.child("eval_results"), file, get_string));
  // Like variant model paths: eval results describe models, so they live beside them.
  if (!file.empty()) q.eval_results = models_dir / file;
  return Status::Ok();
}

Status parse_shadow(const Field& f, ShadowConfig& s) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(expect_map(f, {"sample_ratio", "include_baseline", "queue_capacity", "threads"}));
  const Field ratio = f.child("sample_ratio");
  if (ratio.present()) {
    QGATE_ASSIGN_OR_RETURN(s.sample_ratio, get_number(ratio));
    if (s.sample_ratio < 0.0 || s.sample_ratio > 1.0) return config_error(ratio, "must be in [0, 1]");
  }
  QGATE_TRY_STATUS(optional(f.child("include_baseline"), s.include_baseline, get_bool));
  QGATE_TRY_STATUS(optional(f.child("queue_capacity"), s.queue_capacity,
                            [](const Field& x) { return get_int(x, 1, 100000); }));
  int64_t threads = s.threads;
  QGATE_TRY_STATUS(optional(f.child("threads"), threads,
                            [](const Field& x) { return get_int(x, 1, 256); }));
  s.threads = static_cast<int>(threads);
  return Status::Ok();
}

Status parse_feedback(const Field& f, FeedbackConfig& fb) {
  if (!f.present()) return Status::Ok();
  QGATE_TRY_STATUS(expect_map(f, {"max_tracked_responses"}));
  QGATE_TRY_STATUS(optional(f.child("max_tracked_responses"), fb.max_tracked_responses,
                            [](const Field& x) { return get_int(x, 1, 100000000); }));
  return Status::Ok();
}

Result<ServeConfig> parse_document(const YAML::Node& root, const ConfigDefaults& defaults) {
  ServeConfig c;
  const Field top{root, ""};
  if (!root.IsMap()) {
    return make_error(ErrorCode::kInvalidArgument, "config: the top level must be a mapping");
  }
  QGATE_TRY_STATUS(expect_map(top, {"listen", "admin_token", "state_dir", "models_dir", "http",
                                    "variants", "routes", "variant_routes", "health", "retry",
                                    "quality", "shadow", "feedback"}));
  const Field listen = top.child("listen");
  if (listen.present()) {
    QGATE_TRY_STATUS(expect_map(listen, {"api", "admin"}));
    QGATE_TRY_STATUS(parse_listen(listen.child("api"), c.api));
    QGATE_TRY_STATUS(parse_listen(listen.child("admin"), c.admin));
  }
  const Field token = top.child("admin_token");
  if (token.present()) {
    QGATE_TRY_STATUS(expect_map(token, {"env", "file"}));
    QGATE_TRY_STATUS(optional(token.child("env"), c.admin_token.env, get_string));
    std::string file;
    QGATE_TRY_STATUS(optional(token.child("file"), file, get_string));
    c.admin_token.file = file;
    if (!c.admin_token.env.empty() && !file.empty()) {
      return config_error(token, "set either env or file, not both");
    }
  }
  std::string state_dir = c.state_dir.string();
  QGATE_TRY_STATUS(optional(top.child("state_dir"), state_dir, get_string));
  c.state_dir = state_dir;
  std::string models_dir = defaults.models_dir.string();
  QGATE_TRY_STATUS(optional(top.child("models_dir"), models_dir, get_string));
  c.models_dir = models_dir;
  QGATE_TRY_STATUS(parse_http(top.child("http"), c.http));

  const Field variants = top.child("variants");
  if (!variants.present() || !variants.node.IsSequence() || variants.node.size() == 0) {
    return config_error(variants, "must be a non-empty list of variants");
  }
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < variants.node.size(); ++i) {
    QGATE_ASSIGN_OR_RETURN(VariantConfig v, parse_variant(variants.item(i), c.models_dir));
    if (!names.insert(v.name).second) {
      return config_error(variants.item(i).child("name"), "duplicate variant '" + v.name + "'");
    }
    c.variants.push_back(std::move(v));
  }

  const Field routes = top.child("routes");
  if (routes.present() && !routes.node.IsSequence()) return config_error(routes, "must be a list");
  for (size_t i = 0; routes.present() && i < routes.node.size(); ++i) {
    QGATE_ASSIGN_OR_RETURN(Route r, parse_route(routes.item(i)));
    c.routes.push_back(std::move(r));
  }
  bool variant_routes = true;
  QGATE_TRY_STATUS(optional(top.child("variant_routes"), variant_routes, get_bool));
  // Checked before the per-variant routes are added so indices in messages match the file.
  const auto known = c.variant_names();
  if (!c.routes.empty()) QGATE_TRY_STATUS(validate_routes(c.routes, known, "routes"));
  if (variant_routes) {
    for (const auto& v : c.variants) {
      if (std::any_of(c.routes.begin(), c.routes.end(),
                      [&](const Route& r) { return r.model == v.name; })) {
        continue;
      }
      Route r;
      r.model = v.name;
      r.weights = {{v.name, 1.0}};
      r.baseline = v.name;
      c.routes.push_back(std::move(r));
    }
  }
  if (c.routes.empty()) {
    return config_error(routes, "at least one route is required (or variant_routes: true)");
  }
  QGATE_TRY_STATUS(validate_routes(c.routes, known, "routes"));
  QGATE_TRY_STATUS(parse_health(top.child("health"), c.health));
  QGATE_TRY_STATUS(parse_retry(top.child("retry"), c.retry));
  QGATE_TRY_STATUS(parse_quality(top.child("quality"), c.models_dir, c.quality));
  QGATE_TRY_STATUS(parse_shadow(top.child("shadow"), c.shadow));
  QGATE_TRY_STATUS(parse_feedback(top.child("feedback"), c.feedback));
  return c;
}

constexpr std::string_view kEmbeddedDefault =
    R"yaml(# qgate's built-in configuration: the three SmolLM2-135M variants that
# scripts/prepare_variants.sh produces under $QGATE_MODEL_DIR/variants.
listen:
  api: {host: 127.0.0.1, port: 8080}
  admin: {host: 127.0.0.1, port: 8081}
admin_token: {env: QGATE_ADMIN_TOKEN}
state_dir: qgate-state
http:
  max_header_bytes: 16384
  max_body_bytes: 1048576
  read_timeout: 30s
  write_timeout: 30s
  idle_timeout: 60s
  first_byte_timeout: 30s
  request_timeout: 10m
  shutdown_grace: 10s
variants:
  - name: smollm2-fp16
    model: variants/smollm2-fp16
    device: auto
    # auto: the first GPU when qgate has CUDA and one is visible, else the CPU.
    # Shared by all three (YAML anchor). threads 0 = all cores. 8192 KV tokens are ~380 MB per
    # worker with the CPU's fp32 cache (30 layers x 3 KV heads x 64 dims x K,V x 4 bytes =
    # 45 KiB/token), half that with kv_cache_dtype f16 (keys and values rounded to fp16, as
    # llama.cpp does) and in a GPU's cache, which is always fp16.
    worker: &worker
      threads: 0
      max_running: 8
      max_batched_tokens: 256
      kv_cache_tokens: 8192
      kv_cache_dtype: f32
      max_queued: 64
      max_context_tokens: 2048
  - name: smollm2-gptq
    model: variants/smollm2-gptq-4bit
    device: auto
    worker: *worker
  - name: smollm2-awq
    model: variants/smollm2-awq-4bit
    device: auto
    worker: *worker
routes:
  - model: smollm2
    weights: {smollm2-fp16: 80, smollm2-gptq: 10, smollm2-awq: 10}
    baseline: smollm2-fp16
    fallback: [smollm2-fp16]
    sticky: {header: x-session-id, user: true}
    override_header: x-qgate-variant
variant_routes: true
health:
  probe_interval: 10s
  probe_timeout: 5s
  consecutive_failures: 5
  base_ejection: 30s
  max_ejection: 5m
  half_open_successes: 2
  half_open_max_trials: 1
retry:
  max_attempts: 3
  budget_ratio: 0.2
  min_retries: 3
# docs/METRICS.md. `qgate eval --json` results of the served variants become the qgate_eval_*
# gauges (scripts/prepare_variants.sh writes this file); POST /admin/quality/reload re-reads it.
quality:
  eval_results: variants/eval-results.json
# 5% of the 4-bit variants' answers are re-scored by the FP16 baseline at idle CPU priority.
shadow:
  sample_ratio: 0.05
  include_baseline: false
  queue_capacity: 16
  threads: 1
feedback:
  max_tracked_responses: 100000
)yaml";

}  // namespace

std::vector<std::string> ServeConfig::variant_names() const {
  std::vector<std::string> out;
  out.reserve(variants.size());
  for (const auto& v : variants) out.push_back(v.name);
  return out;
}

const VariantConfig* ServeConfig::find_variant(std::string_view name) const {
  for (const auto& v : variants) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

ConfigDefaults ConfigDefaults::from_environment() {
  ConfigDefaults d;
  if (const char* dir = std::getenv("QGATE_MODEL_DIR"); dir != nullptr && *dir != '\0') {
    d.models_dir = dir;
  }
  return d;
}

std::string_view embedded_default_config() { return kEmbeddedDefault; }

Result<ServeConfig> parse_serve_config(std::string_view yaml, const ConfigDefaults& defaults) {
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    if (!root.IsDefined() || root.IsNull()) {
      return make_error(ErrorCode::kInvalidArgument, "config: the document is empty");
    }
    return parse_document(root, defaults);
  } catch (const YAML::Exception& e) {
    // yaml-cpp's what() already carries "yaml-cpp: error at line L, column C: ...".
    return make_error(ErrorCode::kInvalidArgument,
                      std::string("config: invalid YAML: ") + e.what());
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, std::string("config: ") + e.what());
  }
}

Result<ServeConfig> load_cli_config(const std::string& file) {
  const ConfigDefaults defaults = ConfigDefaults::from_environment();
  return file.empty() ? parse_serve_config(embedded_default_config(), defaults)
                      : load_serve_config(file, defaults);
}

Result<ServeConfig> load_serve_config(const std::filesystem::path& file,
                                      const ConfigDefaults& defaults) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return make_error(ErrorCode::kNotFound, file.string() + ": no such config file");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.is_open() || in.bad()) {
    return make_error(ErrorCode::kIo, file.string() + ": cannot read the config file");
  }
  auto parsed = parse_serve_config(text.str(), defaults);
  if (!parsed.ok()) {
    return make_error(parsed.error().code(), file.string() + ": " + parsed.error().message());
  }
  return parsed;
}

Result<std::string> load_admin_token(const AdminTokenConfig& source) {
  std::string token;
  if (!source.env.empty()) {
    const char* v = std::getenv(source.env.c_str());
    if (v == nullptr) {
      return make_error(ErrorCode::kNotFound,
                        "admin_token.env: environment variable " + source.env + " is not set");
    }
    token = v;
  } else if (!source.file.empty()) {
    std::ifstream in(source.file, std::ios::binary);
    if (!in.is_open()) {
      return make_error(ErrorCode::kNotFound,
                        "admin_token.file: cannot open " + source.file.string());
    }
    std::ostringstream text;
    text << in.rdbuf();
    token = text.str();
  } else {
    return std::string();
  }
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) {
    return make_error(ErrorCode::kInvalidArgument,
                      source.env.empty() ? "admin_token.file: " + source.file.string() + " is empty"
                                         : "admin_token.env: " + source.env + " is empty");
  }
  return token;
}

}  // namespace qgate

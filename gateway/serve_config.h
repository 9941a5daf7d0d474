// `qgate serve` configuration: YAML -> typed ServeConfig, plus the embedded default config that
// serves the three SmolLM2 variants.
//
// Every problem in a config -- YAML syntax, a missing or unknown key, a wrong type, a value out of
// range, a route naming an unknown variant -- comes back as InvalidArgument with the YAML path of
// the field and, where the parser knows it, its line:
//   `routes[0].weights.smollm2-gptq: must be >= 0 (line 31)`.
// No exception escapes (yaml-cpp's are caught at this boundary). Parsing never touches the
// filesystem: model paths are resolved but not checked, so a config can be validated anywhere.
//
// Durations are strings with a unit: "250ms", "30s", "5m", "1h". Relative `state_dir` and token
// file paths are taken as given (relative to the working directory); relative variant `model`
// paths are resolved against the models directory: the config's `models_dir` if set, else
// ConfigDefaults::models_dir (QGATE_MODEL_DIR, or ./models).
//
// When `variant_routes` is true (the default), every variant also gets a route under its own
// name (all traffic to it, no fallback) unless the config already has a route of that name, so a
// client can address one variant directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/worker.h"  // WorkerOptions
#include "kernels/status.h"
#include "policies/clock.h"
#include "policies/outlier_detector.h"
#include "policies/retry_budget.h"
#include "policies/routing_table.h"

namespace qgate {

struct ListenConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = the OS picks one (tests)
};

// Where the admin bearer token comes from: exactly one of env / file, or neither (no token
// configured; what the admin API then does is the server's policy).
struct AdminTokenConfig {
  std::string env;             // environment variable name
  std::filesystem::path file;  // file whose content (trailing whitespace trimmed) is the token
};

struct HttpLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  Duration read_timeout = std::chrono::seconds(30);        // reading one request
  Duration write_timeout = std::chrono::seconds(30);       // one write to the client
  Duration idle_timeout = std::chrono::seconds(60);        // keep-alive wait for the next request
  Duration first_byte_timeout = std::chrono::seconds(30);  // variant's first token; then fallback
  Duration request_timeout = std::chrono::minutes(10);     // a whole request, streaming included
  Duration shutdown_grace = std::chrono::seconds(10);      // in-flight requests finish within this
};

struct VariantConfig {
  std::string name;             // [A-Za-z0-9._-]+, unique; used in metrics labels and admin URLs
  std::filesystem::path model;  // GGUF file or HF directory, resolved against the models dir
  // auto (default: the first GPU when this build has CUDA and one is visible, else the CPU), cpu,
  // cuda (= cuda:0) or cuda:<n>; resolved at start (engine/device_spec.h).
  DeviceSpec device{DeviceSpec::Kind::kAuto, 0};
  WorkerOptions worker;
};

struct HealthConfig {
  Duration probe_interval = std::chrono::seconds(10);  // one tiny generation per variant
  Duration probe_timeout = std::chrono::seconds(5);
  OutlierOptions outlier;
};

// Observability (docs/METRICS.md).
struct QualityConfig {
  // `qgate eval --json` results to export as qgate_eval_* gauges: read at start when the file
  // exists and again on POST /admin/quality/reload. A relative path is resolved against the
  // models directory, like variant model paths. Empty: none.
  std::filesystem::path eval_results;
};

struct ShadowConfig {
  double sample_ratio = 0.0;      // share of successful responses re-scored by the baseline
  bool include_baseline = false;  // also score the baseline's own responses (the control)
  int64_t queue_capacity = 16;    // responses waiting to be scored; beyond it they are dropped
  int threads = 1;                // compute threads of the scorer (at idle CPU priority)
};

struct FeedbackConfig {
  int64_t max_tracked_responses = 100000;  // recent responses that can take feedback
};

struct ServeConfig {
  ListenConfig api{"127.0.0.1", 8080};
  ListenConfig admin{"127.0.0.1", 8081};
  AdminTokenConfig admin_token;
  std::filesystem::path state_dir = "qgate-state";
  std::filesystem::path models_dir;  // as resolved
  HttpLimits http;
  std::vector<VariantConfig> variants;
  std::vector<Route> routes;  // version 1 of the routing store, validated
  HealthConfig health;
  RetryBudgetOptions retry;
  QualityConfig quality;
  ShadowConfig shadow;
  FeedbackConfig feedback;

  std::vector<std::string> variant_names() const;
  const VariantConfig* find_variant(std::string_view name) const;
};

struct ConfigDefaults {
  std::filesystem::path models_dir = "models";
  // QGATE_MODEL_DIR when set and non-empty, else ./models.
  static ConfigDefaults from_environment();
};

// The YAML compiled into the binary (`qgate serve` without --config).
std::string_view embedded_default_config();

Result<ServeConfig> parse_serve_config(std::string_view yaml, const ConfigDefaults& defaults);
// Reads and parses a file; messages are prefixed with the file name. NotFound / Io when it
// cannot be read.
Result<ServeConfig> load_serve_config(const std::filesystem::path& file,
                                      const ConfigDefaults& defaults);
// What the CLI commands read: `file` when given, else the embedded default config, with defaults
// from the environment.
Result<ServeConfig> load_cli_config(const std::string& file);

// The admin token from its configured source. NotFound when the variable is unset or the file is
// missing; InvalidArgument when the token is empty; an empty string when no source is configured.
Result<std::string> load_admin_token(const AdminTokenConfig& source);

}  // namespace qgate

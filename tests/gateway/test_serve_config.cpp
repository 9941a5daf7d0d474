// The serve config: the embedded default, every section's fields, and a matrix of broken configs
// each of which must produce its own message naming the YAML path.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gateway/serve_config.h"

namespace qgate {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

ConfigDefaults defaults() { return ConfigDefaults{"/opt/models"}; }

// A small valid config; the bad-config cases each replace one piece of it.
const std::string kBase = R"(listen:
  api: {host: 0.0.0.0, port: 0}
  admin: {host: 127.0.0.1, port: 0}
admin_token: {file: /run/secrets/qgate}
state_dir: /var/lib/qgate
http:
  max_body_bytes: 2048
  read_timeout: 250ms
variants:
  - name: a
    model: a.gguf
    worker: {threads: 2, max_running: 4}
  - name: b
    model: /abs/b
routes:
  - model: pub
    weights: {a: 70, b: 30}
    baseline: a
retry: {max_attempts: 2, budget_ratio: 0.5}
)";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: '" << from << "' not in the base config";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST(ServeConfigTest, EmbeddedDefaultServesTheThreeSmolLM2Variants) {
  auto c = parse_serve_config(embedded_default_config(), defaults());
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->variant_names(),
            (std::vector<std::string>{"smollm2-fp16", "smollm2-gptq", "smollm2-awq"}));
  EXPECT_EQ(c->find_variant("smollm2-fp16")->model, "/opt/models/variants/smollm2-fp16");
  EXPECT_EQ(c->find_variant("smollm2-gptq")->model, "/opt/models/variants/smollm2-gptq-4bit");
  EXPECT_EQ(c->find_variant("smollm2-awq")->model, "/opt/models/variants/smollm2-awq-4bit");
  // auto: the GPU where qgate has CUDA and one is visible, else the CPU (resolved at start).
  EXPECT_EQ(c->find_variant("smollm2-awq")->device.to_string(), "auto");
  EXPECT_EQ(c->find_variant("smollm2-awq")->worker.kv_cache_tokens, 8192);  // YAML alias shared

  ASSERT_EQ(c->routes.size(), 4u);  // the split route, then one per variant
  const Route& split = c->routes[0];
  EXPECT_EQ(split.model, "smollm2");
  EXPECT_EQ(split.weights, (std::vector<VariantWeight>{
                               {"smollm2-fp16", 80}, {"smollm2-gptq", 10}, {"smollm2-awq", 10}}));
  EXPECT_EQ(split.baseline, "smollm2-fp16");
  EXPECT_EQ(split.fallback, std::vector<std::string>{"smollm2-fp16"});
  EXPECT_EQ(split.sticky.header, "x-session-id");
  EXPECT_TRUE(split.sticky.user);
  EXPECT_EQ(split.override_header, "x-qgate-variant");
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(c->routes[i].model, c->variants[i - 1].name);
    EXPECT_EQ(c->routes[i].weights, (std::vector<VariantWeight>{{c->variants[i - 1].name, 1}}));
    EXPECT_TRUE(c->routes[i].fallback.empty());
  }
  EXPECT_EQ(c->admin_token.env, "QGATE_ADMIN_TOKEN");
  EXPECT_EQ(c->health.outlier.max_ejection, std::chrono::minutes(5));
  EXPECT_EQ(c->retry.max_attempts, 3);
  EXPECT_TRUE(c->health.outlier.validate().ok());
  EXPECT_TRUE(c->retry.validate().ok());
}

TEST(ServeConfigTest, ModelsDirComesFromTheEnvironmentOrTheConfig) {
  ::setenv("QGATE_MODEL_DIR", "/env/models", 1);
  EXPECT_EQ(ConfigDefaults::from_environment().models_dir, "/env/models");
  ::unsetenv("QGATE_MODEL_DIR");
  EXPECT_EQ(ConfigDefaults::from_environment().models_dir, "models");
  auto c = parse_serve_config("models_dir: /m\n" + kBase, defaults());
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->variants[0].model, "/m/a.gguf");
  EXPECT_EQ(c->variants[1].model, "/abs/b");  // absolute paths are kept
}

TEST(ServeConfigTest, EveryFieldIsRead) {
  auto c = parse_serve_config(kBase, defaults());
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->api.host, "0.0.0.0");
  EXPECT_EQ(c->api.port, 0);
  EXPECT_EQ(c->admin_token.file, "/run/secrets/qgate");
  EXPECT_EQ(c->state_dir, "/var/lib/qgate");
  EXPECT_EQ(c->http.max_body_bytes, 2048u);
  EXPECT_EQ(c->http.max_header_bytes, HttpLimits{}.max_header_bytes);  // default kept
  EXPECT_EQ(c->http.read_timeout, milliseconds(250));
  EXPECT_EQ(c->variants[0].worker.threads, 2);
  EXPECT_EQ(c->variants[0].worker.max_running, 4);
  EXPECT_EQ(c->variants[0].worker.max_queued, WorkerOptions{}.max_queued);
  EXPECT_EQ(c->variants[0].device.to_string(), "auto");  // the default
  EXPECT_EQ(c->variants[0].worker.kv_cache_dtype, KvDType::kF32);  // the default
  auto f16 = parse_serve_config(replace(kBase, "max_running: 4", "max_running: 4, kv_cache_dtype: f16"),
                                defaults());
  ASSERT_TRUE(f16.ok()) << f16.error().to_string();
  EXPECT_EQ(f16->variants[0].worker.kv_cache_dtype, KvDType::kF16);
  auto on_gpu = parse_serve_config(replace(kBase, "model: /abs/b", "model: /abs/b\n    device: cuda:1"),
                                   defaults());
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.error().to_string();
  EXPECT_EQ(on_gpu->variants[1].device, (DeviceSpec{DeviceSpec::Kind::kCuda, 1}));
  auto on_cpu = parse_serve_config(replace(kBase, "model: /abs/b", "model: /abs/b\n    device: cpu"),
                                   defaults());
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.error().to_string();
  EXPECT_EQ(on_cpu->variants[1].device.to_string(), "cpu");
  EXPECT_EQ(c->routes[0].fallback, std::vector<std::string>{"a"});  // default: the baseline
  EXPECT_FALSE(c->routes[0].sticky.enabled());
  EXPECT_EQ(c->retry.max_attempts, 2);
  EXPECT_EQ(c->retry.ratio, 0.5);
  EXPECT_EQ(c->routes.size(), 3u);

  EXPECT_EQ(c->shadow.sample_ratio, 0.0);  // observability sections default to off / empty
  EXPECT_TRUE(c->quality.eval_results.empty());
  auto observed = parse_serve_config(
      kBase + "shadow: {sample_ratio: 0.25, include_baseline: true, queue_capacity: 4, threads: 2}\n"
              "quality: {eval_results: eval.json}\n"
              "feedback: {max_tracked_responses: 10}\n",
      defaults());
  ASSERT_TRUE(observed.ok()) << observed.error().to_string();
  EXPECT_EQ(observed->shadow.sample_ratio, 0.25);
  EXPECT_TRUE(observed->shadow.include_baseline);
  EXPECT_EQ(observed->shadow.queue_capacity, 4);
  EXPECT_EQ(observed->shadow.threads, 2);
  EXPECT_EQ(observed->quality.eval_results, "/opt/models/eval.json");  // beside the models
  EXPECT_EQ(observed->feedback.max_tracked_responses, 10);

  auto no_direct = parse_serve_config(kBase + "variant_routes: false\n", defaults());
  ASSERT_TRUE(no_direct.ok());
  EXPECT_EQ(no_direct->routes.size(), 1u);
}

TEST(ServeConfigTest, BrokenConfigsNameTheField) {
  struct Case {
    std::string yaml;
    std::string message;
  };
  const std::vector<Case> cases = {
      {replace(kBase, "{a: 70, b: 30}", "{a: 70, b: -1}"),
       "routes[0].weights.b: must be >= 0 (line 17)"},
      {replace(kBase, "{a: 70, b: 30}", "{a: 0, b: 0}"),
       "routes[0].weights: at least one weight must be > 0"},
      {replace(kBase, "{a: 70, b: 30}", "{a: 70, c: 30}"),
       "routes[0].weights.c: unknown variant (known: a, b)"},
      {replace(kBase, "{a: 70, b: 30}", "{a: 70, b: lots}"),
       "routes[0].weights.b: must be a number, got 'lots'"},
      {replace(kBase, "{a: 70, b: 30}", "[a, b]"),
       "routes[0].weights: must map variant names to weights"},
      {replace(kBase, "baseline: a", "baseline: z"), "routes[0].baseline: unknown variant 'z'"},
      {replace(kBase, "baseline: a", "baseline: a\n    fallback: [b, q]"),
       "routes[0].fallback[1]: unknown variant 'q'"},
      {replace(kBase, "baseline: a", "fallback: [a]"), "routes[0].baseline: is required"},
      {replace(kBase, "baseline: a", "baseline: a\n    sticky: {cookie: s}"),
       "routes[0].sticky.cookie: unknown key"},
      {replace(kBase, "baseline: a", "baseline: a\n    sticky: {user: maybe}"),
       "routes[0].sticky.user: must be true or false"},
      {replace(kBase, "  - model: pub",
               "  - model: a\n    weights: {a: 1}\n    baseline: a\n  - model: a"),
       "routes[1].model: duplicate route for model 'a'"},
      {replace(kBase, "port: 0}\n  admin", "port: 70000}\n  admin"),
       "listen.api.port: must be <= 65535"},
      {replace(kBase, "port: 0}\n  admin", "port: -1}\n  admin"), "listen.api.port: must be >= 0"},
      {replace(kBase, "host: 0.0.0.0", "host: \"\""), "listen.api.host: must not be empty"},
      {replace(kBase, "{file: /run/secrets/qgate}", "{file: /x, env: T}"),
       "admin_token: set either env or file, not both"},
      {replace(kBase, "read_timeout: 250ms", "read_timeout: 250"),
       "http.read_timeout: needs a unit ms, s, m or h"},
      {replace(kBase, "read_timeout: 250ms", "read_timeout: 0s"), "http.read_timeout: must be > 0"},
      {replace(kBase, "read_timeout: 250ms", "read_timeout: 2d"),
       "http.read_timeout: needs a unit"},
      {replace(kBase, "read_timeout: 250ms", "read_timeout: 100000h"),
       "http.read_timeout: must be at most 24h"},
      {replace(kBase, "max_body_bytes: 2048", "max_body_bytes: 0"),
       "http.max_body_bytes: must be >= 1"},
      {replace(kBase, "max_body_bytes: 2048", "max_body_bytes: 1.5"),
       "http.max_body_bytes: must be an integer, got '1.5'"},
      {replace(kBase, "max_body_bytes: 2048", "max_bodybytes: 2048"),
       "http.max_bodybytes: unknown key"},
      {replace(kBase, "  - name: b\n    model: /abs/b\n", "  - name: a\n    model: /abs/b\n"),
       "variants[1].name: duplicate variant 'a'"},
      {replace(kBase, "name: b", "name: b/c"), "variants[1].name: may hold only letters, digits"},
      {replace(kBase, "    model: /abs/b\n", ""), "variants[1].model: is required"},
      {replace(kBase, "model: /abs/b", "model: /abs/b\n    device: tpu"),
       "variants[1].device: device must be auto, cpu, cuda or cuda:<n>, got 'tpu'"},
      {replace(kBase, "max_running: 4", "max_running: 0"),
       "variants[0].worker.max_running: must be >= 1"},
      {replace(kBase, "max_running: 4", "kv_cache_tokens: 8, kv_block_tokens: 16"),
       "variants[0].worker.kv_cache_tokens: must be >= kv_block_tokens"},
      {replace(kBase, "max_running: 4", "kv_cache_dtype: fp8"),
       "variants[0].worker.kv_cache_dtype: must be f32 or f16, got 'fp8'"},
      {replace(kBase, "threads: 2", "threads: [2]"),
       "variants[0].worker.threads: must be an integer"},
      {replace(kBase, "retry: {max_attempts: 2, budget_ratio: 0.5}", "retry: {max_attempts: 0}"),
       "retry.max_attempts: must be >= 1"},
      {replace(kBase, "budget_ratio: 0.5", "budget_ratio: 2"),
       "retry.budget_ratio: must be in [0, 1]"},
      {kBase + "health: {base_ejection: 1m, max_ejection: 30s}",
       "health.max_ejection: must be >= base_ejection"},
      {kBase + "health: {consecutive_failures: 0}", "health.consecutive_failures: must be >= 1"},
      {kBase + "health: {probe_interval: soon}",
       "health.probe_interval: must be a non-negative duration"},
      {kBase + "healthz: {}", "healthz: unknown key (expected one of: listen, admin_token"},
      {kBase + "shadow: {sample_ratio: 1.5}", "shadow.sample_ratio: must be in [0, 1]"},
      {kBase + "shadow: {queue_capacity: 0}", "shadow.queue_capacity: must be >= 1"},
      {kBase + "shadow: {ratio: 0.1}", "shadow.ratio: unknown key"},
      {kBase + "quality: {eval_results: [a]}", "quality.eval_results: must be a string"},
      {kBase + "feedback: {max_tracked_responses: 0}",
       "feedback.max_tracked_responses: must be >= 1"},
      {replace(kBase,
               "variants:\n  - name: a\n    model: a.gguf\n    worker: {threads: 2, max_running: "
               "4}\n  - name: b\n    model: /abs/b\n",
               "variants: []\n"),
       "variants: must be a non-empty list"},
      {kBase + "routes: [", "config: invalid YAML"},
      {"- just\n- a list\n", "config: the top level must be a mapping"},
      {"", "config: the document is empty"},
  };
  for (const auto& c : cases) {
    auto r = parse_serve_config(c.yaml, defaults());
    ASSERT_FALSE(r.ok()) << "accepted:\n" << c.yaml;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(c.message), std::string::npos)
        << "expected '" << c.message << "'\n     got '" << r.error().message() << "'";
  }
}

TEST(ServeConfigTest, LoadingAFileNamesItInErrors) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "qgate_serve_config_test";
  std::filesystem::create_directories(dir);
  const auto file = dir / "serve.yaml";
  std::ofstream(file) << replace(kBase, "port: 0}\n  admin", "port: nope}\n  admin");
  auto r = load_serve_config(file, defaults());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message().rfind(file.string() + ": listen.api.port: must be an integer", 0),
            0u)
      << r.error().message();
  std::ofstream(file) << kBase;
  EXPECT_TRUE(load_serve_config(file, defaults()).ok());
  EXPECT_EQ(load_serve_config(dir / "missing.yaml", defaults()).error().code(),
            ErrorCode::kNotFound);
}

TEST(ServeConfigTest, AdminTokenFromFileOrEnvironment) {
  const auto file = std::filesystem::path(::testing::TempDir()) / "qgate_admin_token";
  std::ofstream(file) << "s3cret\n";
  auto t = load_admin_token(AdminTokenConfig{"", file});
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  EXPECT_EQ(*t, "s3cret");
  std::ofstream(file) << "\n";
  EXPECT_EQ(load_admin_token(AdminTokenConfig{"", file}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(load_admin_token(AdminTokenConfig{"", file.string() + ".missing"}).error().code(),
            ErrorCode::kNotFound);

  ::setenv("QGATE_TEST_ADMIN_TOKEN_X", "tok", 1);
  EXPECT_EQ(*load_admin_token(AdminTokenConfig{"QGATE_TEST_ADMIN_TOKEN_X", {}}), "tok");
  ::unsetenv("QGATE_TEST_ADMIN_TOKEN_X");
  auto missing = load_admin_token(AdminTokenConfig{"QGATE_TEST_ADMIN_TOKEN_X", {}});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(),
            "admin_token.env: environment variable QGATE_TEST_ADMIN_TOKEN_X is not set");
  EXPECT_EQ(*load_admin_token(AdminTokenConfig{}), "");
}

}  // namespace
}  // namespace qgate

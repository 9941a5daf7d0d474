// The real `qgate` binary, run as a user would: commands, exit codes, error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/engine/model_fixture.h"

namespace {

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr
};

CliRun run(const std::string& args) {
  const std::string cmd = std::string(QGATE_BINARY) + " " + args + " 2>&1";
  CliRun r{-1, {}};
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool have_model() { return std::filesystem::exists(qgate::testing::model_path()); }

TEST(Cli, HelpListsTheCommands) {
  CliRun r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("generate"), std::string::npos);
  EXPECT_NE(r.output.find("chat"), std::string::npos);
}

TEST(Cli, ChatAnswersAQuestion) {
  if (!have_model()) GTEST_SKIP() << "model not found";
  CliRun r = run("chat --threads 2 --model " + qgate::testing::model_path() +
              " --message 'What is 2 + 2?'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("The answer is 4"), std::string::npos) << r.output;
}

TEST(Cli, GenerateRawPromptWithStopString) {
  if (!have_model()) GTEST_SKIP() << "model not found";
  CliRun r = run("generate --raw --threads 2 --max-tokens 20 --stop '8' --model " +
              qgate::testing::model_path() + " --prompt '1, 2, 3, 4, 5,'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("6, 7,"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find('8'), std::string::npos) << r.output;
}

TEST(Cli, MissingModelIsAClearError) {
  CliRun r = run("generate --model /nonexistent/model.gguf --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/nonexistent/model.gguf"), std::string::npos) << r.output;
}

TEST(Cli, NotAModelFileIsAClearError) {
  CliRun r = run("generate --model " + std::string(QGATE_SOURCE_FILE) + " --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("gguf"), std::string::npos) << r.output;
}

TEST(Cli, InvalidOptionsAreRejected) {
  EXPECT_NE(run("generate").exit_code, 0);  // --prompt is required
  EXPECT_NE(run("generate --prompt hi --max-tokens 0").exit_code, 0);
  EXPECT_NE(run("generate --prompt hi --temperature -3 --model " + qgate::testing::model_path())
                .exit_code, 0);
  EXPECT_NE(run("frobnicate").exit_code, 0);
}

// A variant placed on a GPU that is not there fails at start, naming the device and what is
// visible, before anything is loaded (exit code 2, like every other configuration error).
TEST(Cli, ServeOnAMissingGpuIsAClearError) {
  if (!have_model()) GTEST_SKIP() << "model not found";
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "qgate-cli-gpu";
  std::filesystem::create_directories(dir);
  const std::filesystem::path config = dir / "serve.yaml";
  FILE* f = std::fopen(config.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fprintf(f,
               "listen: {api: {host: 127.0.0.1, port: 0}, admin: {host: 127.0.0.1, port: 0}}\n"
               "state_dir: %s/state\n"
               "variants:\n  - name: a\n    model: %s\n    device: cuda:63\n"
               "routes:\n  - model: m\n    weights: {a: 1}\n    baseline: a\n",
               dir.c_str(), qgate::testing::model_path().c_str());
  std::fclose(f);
  ::setenv("QGATE_ADMIN_TOKEN", "cli-test-admin-token-0123456789", 1);
  CliRun r = run("serve --config " + config.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("variant a: device cuda:63"), std::string::npos) << r.output;
  // Without CUDA in the build the message says so; with it, it lists the visible devices.
  EXPECT_TRUE(r.output.find("without CUDA") != std::string::npos ||
              r.output.find("is not visible to this process") != std::string::npos)
      << r.output;
  std::filesystem::remove_all(dir);
}

}  // namespace

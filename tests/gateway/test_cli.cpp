// The real `qgate` binary, run as a user would: commands, exit codes, error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
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

}  // namespace

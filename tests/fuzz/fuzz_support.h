// What the fuzz targets share. FUZZ_CHECK states a property every input must keep: a violation
// prints what broke and aborts, so libFuzzer saves the input as a reproducer and the corpus replay
// test (replay_main.cpp) fails with the message. fuzz::state_dir() is a scratch directory.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#define FUZZ_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: property violated: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                   \
      std::fprintf(stderr, "\n");                                                          \
      std::abort();                                                                        \
    }                                                                                      \
  } while (false)

namespace qgate::fuzz {

// A directory of this process's own, in /dev/shm when there is one (the targets that write files
// fsync them on every input), removed at exit. `name` tells the targets' directories apart.
inline const std::filesystem::path& state_dir(const char* name) {
  struct Dir {
    std::filesystem::path path;
    explicit Dir(const char* name) {
      namespace fs = std::filesystem;
      const fs::path base =
          fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
      path = base / ("qgate-fuzz-" + std::string(name) + "-" + std::to_string(getpid()));
      fs::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir(name);
  return dir.path;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace qgate::fuzz

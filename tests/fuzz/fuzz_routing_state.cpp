// libFuzzer target for the durable routing state: each input is written as
// <dir>/routing_state.json and RoutingStore::open restores it, as `qgate serve` does at start.
// Properties, beyond "no crash, no leak, no undefined behaviour":
//  - a file that opens has a live table that validates against the configured variants;
//  - a change made to a restored store is durable: opening the directory again gives the same
//    table, history and drained set (a restored state never writes a file that cannot be read
//    back, so a restart after an admin change cannot brick the gateway);
//  - a change that fails leaves the file as it was.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gateway/routing_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kVariants = {"m-fp16", "m-gptq", "m-awq"};

// One directory per process, removed at exit.
struct StateDir {
  fs::path path;
  StateDir() {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    path = base / ("qgate-fuzz-routing-" + std::to_string(getpid()));
    fs::create_directories(path);
  }
  ~StateDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const fs::path& state_dir() {
  static const StateDir dir;
  return dir.path;
}

qgate::RoutingStoreOptions options() {
  qgate::RoutingStoreOptions o;
  o.dir = state_dir();
  o.variants = kVariants;
  qgate::Route r;
  r.model = "m";
  r.weights = {{"m-fp16", 1}};
  r.baseline = "m-fp16";
  o.initial_routes = {r};
  o.now_unix_ms = [] { return int64_t{1'700'000'000'000}; };
  return o;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void check_same(const qgate::RoutingStore& a, const qgate::RoutingStore& b) {
  FUZZ_CHECK(a.current()->version == b.current()->version, "version %llu reopened as %llu",
             static_cast<unsigned long long>(a.current()->version),
             static_cast<unsigned long long>(b.current()->version));
  FUZZ_CHECK(a.current()->routes == b.current()->routes, "the routes changed on reopening");
  FUZZ_CHECK(a.history() == b.history(), "the history changed on reopening");
  FUZZ_CHECK(a.drained() == b.drained(), "the drained set changed on reopening");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path file = state_dir() / "routing_state.json";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto store = qgate::RoutingStore::open(options());
  if (!store.ok()) {
    FUZZ_CHECK(store.error().message().find(file.string()) != std::string::npos,
               "the error does not name the file: %s", store.error().message().c_str());
    return 0;
  }
  qgate::RoutingStore& s = *store.value();
  FUZZ_CHECK(qgate::validate_routes(s.current()->routes, kVariants).ok(),
             "restored a live table that does not validate");

  // One change of each kind the admin API makes; each either fails and leaves the file alone,
  // or is written so that reopening restores exactly this store.
  for (int change = 0; change < 3; ++change) {
    const std::string before = read_file(file);
    bool ok = false;
    if (change == 0) {
      ok = s.rollback_to_baseline("", "fuzz").ok();
    } else if (change == 1) {
      ok = s.rollback_to_previous("fuzz").ok();
    } else {
      ok = s.set_drained("m-awq", s.drained().empty(), "fuzz").ok();
    }
    if (!ok) {
      FUZZ_CHECK(read_file(file) == before, "a failed change %d rewrote the state file", change);
      continue;
    }
    auto reopened = qgate::RoutingStore::open(options());
    FUZZ_CHECK(reopened.ok(), "change %d wrote a state that does not open: %s", change,
               reopened.error().message().c_str());
    check_same(s, *reopened.value());
  }
  return 0;
}

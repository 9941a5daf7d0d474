// libFuzzer target for the durable routing state: each input is written as
// <dir>/routing_state.json and RoutingStore::open restores it, as `qgate serve` does at start.
// Properties, beyond "no crash, no leak, no undefined behaviour":
//  - a file that opens has a live table that validates against the configured variants;
//  - a change made to a restored store is durable: opening the directory again gives the same
//    table, history and drained set (a restored state never writes a file that cannot be read
//    back, so a restart after an admin change cannot brick the gateway);
//  - a change that fails leaves the file as it was.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gateway/routing_store.h"
#include "tests/fuzz/store_checks.h"

namespace {

namespace fs = std::filesystem;

const fs::path& state_dir() { return qgate::fuzz::state_dir("routing"); }

qgate::RoutingStoreOptions options() {
  qgate::Route r;
  r.model = "m";
  r.weights = {{"m-fp16", 1}};
  r.baseline = "m-fp16";
  return qgate::fuzz::store_options("routing", {r});
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
  FUZZ_CHECK(qgate::validate_routes(s.current()->routes, qgate::fuzz::kStoreVariants).ok(),
             "restored a live table that does not validate");

  // One change of each kind the admin API makes; each either fails and leaves the file alone,
  // or is written so that reopening restores exactly this store.
  for (int change = 0; change < 3; ++change) {
    const std::string before = qgate::fuzz::read_file(file);
    bool ok = false;
    if (change == 0) {
      ok = s.rollback_to_baseline("", "fuzz").ok();
    } else if (change == 1) {
      ok = s.rollback_to_previous("fuzz").ok();
    } else {
      ok = s.set_drained("m-awq", s.drained().empty(), "fuzz").ok();
    }
    if (!ok) {
      FUZZ_CHECK(qgate::fuzz::read_file(file) == before,
                 "a failed change %d rewrote the state file", change);
      continue;
    }
    auto reopened = qgate::RoutingStore::open(options());
    FUZZ_CHECK(reopened.ok(), "change %d wrote a state that does not open: %s", change,
               reopened.error().message().c_str());
    qgate::fuzz::check_same_state(s, *reopened.value());
  }
  return 0;
}

// RoutingStore on a real directory: versions, rollbacks, history, restart, crash leftovers,
// corrupt state, write failures, drain, and snapshot isolation under concurrent writers.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "gateway/routing_store.h"

namespace qgate {
namespace fs = std::filesystem;
namespace {

const std::vector<std::string> kVariants = {"fp16", "gptq", "awq"};

std::vector<Route> config_routes() {
  Route r;
  r.model = "smollm2";
  r.weights = {{"fp16", 80}, {"gptq", 10}, {"awq", 10}};
  r.baseline = "fp16";
  r.fallback = {"fp16"};
  Route direct;
  direct.model = "gptq";
  direct.weights = {{"gptq", 1}};
  direct.baseline = "gptq";
  return {r, direct};
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class RoutingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("qgate_routing_store_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  RoutingStoreOptions options(std::vector<Route> initial = config_routes()) {
    RoutingStoreOptions o;
    o.dir = dir_;
    o.variants = kVariants;
    o.initial_routes = std::move(initial);
    o.now_unix_ms = [this] { return now_ms_; };
    return o;
  }
  std::unique_ptr<RoutingStore> open_store() {
    auto s = RoutingStore::open(options());
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  fs::path dir_;
  int64_t now_ms_ = 1700000000000;
};

TEST_F(RoutingStoreTest, AFreshStoreStartsAtVersionOneFromTheConfig) {
  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->current()->version, 1u);
  EXPECT_EQ(store->current()->routes, config_routes());
  ASSERT_EQ(store->history().size(), 1u);
  EXPECT_EQ(store->history()[0], (RoutingChange{1, "config", now_ms_, "initial",
                                                "smollm2: fp16=80 gptq=10 awq=10; gptq: gptq=1"}));
  EXPECT_TRUE(fs::exists(store->state_file()));
  EXPECT_FALSE(fs::exists(dir_ / "routing_state.json.tmp"));
}

TEST_F(RoutingStoreTest, InvalidConfigRoutesAreRefused) {
  auto routes = config_routes();
  routes[0].weights[2].variant = "int8";
  auto s = RoutingStore::open(options(routes));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("routes[0].weights.int8: unknown variant"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "routing_state.json"));
}

TEST_F(RoutingStoreTest, SetSplitPublishesANewVersionAndInFlightSnapshotsKeepTheirs) {
  auto store = open_store();
  const auto in_flight = store->current();
  now_ms_ += 1000;
  auto v2 = store->set_split("smollm2", {{"fp16", 70}, {"gptq", 30}}, "alice");
  ASSERT_TRUE(v2.ok()) << v2.error().to_string();
  EXPECT_EQ((*v2)->version, 2u);
  EXPECT_EQ(store->current(), *v2);
  EXPECT_EQ(store->current()->find("smollm2")->weight_of("gptq"), 30.0);
  EXPECT_EQ(in_flight->version, 1u);  // a request that started on v1 still sees v1
  EXPECT_EQ(in_flight->find("smollm2")->weight_of("gptq"), 10.0);
  EXPECT_EQ(store->history().back(),
            (RoutingChange{2, "alice", now_ms_, "set_split", "smollm2: fp16=70 gptq=30"}));
}

TEST_F(RoutingStoreTest, RejectedChangesLeaveEverythingAsItWas) {
  auto store = open_store();
  const std::string file_before = read(store->state_file());
  auto bad = store->set_split("smollm2", {{"fp16", 50}, {"gptq", -1}}, "bob");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "routes[0].weights.gptq: must be a finite number >= 0");
  EXPECT_EQ(store->set_split("smollm2", {{"fp16", 0}}, "bob").error().message(),
            "routes[0].weights: at least one weight must be > 0");
  EXPECT_EQ(store->set_split("smollm2", {{"rtn", 1}}, "bob").error().message(),
            "routes[0].weights.rtn: unknown variant (known: fp16, gptq, awq)");
  EXPECT_EQ(store->set_split("llama", {{"fp16", 1}}, "bob").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->current()->version, 1u);
  EXPECT_EQ(store->history().size(), 1u);
  EXPECT_EQ(read(store->state_file()), file_before);
}

TEST_F(RoutingStoreTest, RollbacksCreateNewVersionsWithOldContent) {
  auto store = open_store();
  EXPECT_EQ(store->rollback_to_previous("ops").error().message(),
            "rollback: version 1 has no previous version");
  ASSERT_TRUE(store->set_split("smollm2", {{"fp16", 70}, {"gptq", 30}}, "alice").ok());
  ASSERT_TRUE(store->set_split("smollm2", {{"fp16", 50}, {"awq", 50}}, "alice").ok());

  auto v4 = store->rollback_to_previous("ops");  // back to v2's split
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ((*v4)->version, 4u);
  EXPECT_EQ((*v4)->routes, (*store->version(2))->routes);

  auto v5 = store->rollback_to_version(1, "ops");
  ASSERT_TRUE(v5.ok());
  EXPECT_EQ((*v5)->version, 5u);
  EXPECT_EQ((*v5)->routes, config_routes());

  auto v6 = store->rollback_to_baseline("smollm2", "pager");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ((*v6)->find("smollm2")->weights,
            (std::vector<VariantWeight>{{"fp16", 100}, {"gptq", 0}, {"awq", 0}}));
  EXPECT_EQ((*v6)->find("gptq")->weights, config_routes()[1].weights);

  EXPECT_EQ(store->rollback_to_version(42, "ops").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->rollback_to_baseline("nope", "ops").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->version(42).error().code(), ErrorCode::kNotFound);

  const auto h = store->history();
  ASSERT_EQ(h.size(), 6u);
  std::vector<std::string> summary;
  for (const auto& c : h)
    summary.push_back(std::to_string(c.version) + " " + c.who + " " + c.action + " " + c.what);
  EXPECT_EQ(summary, (std::vector<std::string>{
                         "1 config initial smollm2: fp16=80 gptq=10 awq=10; gptq: gptq=1",
                         "2 alice set_split smollm2: fp16=70 gptq=30",
                         "3 alice set_split smollm2: fp16=50 awq=50",
                         "4 ops rollback to version 2",
                         "5 ops rollback to version 1",
                         "6 pager rollback all traffic to baseline (smollm2)",
                     }));
}

TEST_F(RoutingStoreTest, ARestartRestoresTheLatestVersionHistoryAndDrains) {
  std::vector<RoutingChange> history;
  {
    auto store = open_store();
    ASSERT_TRUE(store->set_split("smollm2", {{"fp16", 60}, {"gptq", 40}}, "alice").ok());
    ASSERT_TRUE(store->set_drained("awq", true, "bob").ok());
    history = store->history();
  }
  // The second start passes different config routes: once state exists, the config's routes
  // are only history.
  auto other = config_routes();
  other[0].weights = {{"awq", 1}};
  auto reopened = RoutingStore::open(options(other));
  ASSERT_TRUE(reopened.ok()) << reopened.error().to_string();
  auto& store = *reopened;
  EXPECT_EQ(store->current()->version, 2u);
  EXPECT_EQ(store->current()->find("smollm2")->weight_of("gptq"), 40.0);
  EXPECT_EQ(store->history(), history);
  EXPECT_EQ(store->drained(), std::vector<std::string>{"awq"});
  EXPECT_EQ((*store->version(1))->routes, config_routes());
  auto v3 = store->rollback_to_previous("ops");  // versions keep counting after a restart
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ((*v3)->version, 3u);
}

TEST_F(RoutingStoreTest, ATornTempFileFromACrashIsIgnored) {
  {
    auto store = open_store();
    ASSERT_TRUE(store->set_split("smollm2", {{"gptq", 1}}, "a").ok());
  }
  std::ofstream(dir_ / "routing_state.json.tmp") << "{\"format\": \"qgate-routing-st";  // cut short
  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->current()->version, 2u);
  EXPECT_FALSE(fs::exists(dir_ / "routing_state.json.tmp"));
}

TEST_F(RoutingStoreTest, ACorruptStateFileFailsClearlyAndIsNotReset) {
  { auto store = open_store(); }
  const fs::path file = dir_ / "routing_state.json";
  const std::string good = read(file);
  struct Case {
    std::string content;
    std::string message;
  };
  auto edit = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) s.replace(at, from.size(), to);
    return s;
  };
  const std::vector<Case> cases = {
      {good.substr(0, good.size() / 2), "not valid JSON"},
      {"", "not valid JSON"},
      {"[]", "the top level must be an object"},
      {edit("\"qgate-routing-state\"", "\"other\""), "format: must be \"qgate-routing-state\""},
      {edit("\"format_version\":1", "\"format_version\":9"), "format_version: must be 1"},
      {edit("\"fp16\":80", "\"fp16\":\"lots\""),
       "versions[0].routes[0].weights.fp16: must be a number"},
      {edit("\"current\":1", "\"current\":7"), "current: must equal the last version (1)"},
      {edit("\"who\":\"config\"", "\"who\":3"), "history[0].who: must be a string"},
      {edit("\"baseline\":\"fp16\"", "\"baseline\":\"int8\""),
       "versions[0].routes[0].baseline: unknown variant 'int8'"},
  };
  for (const auto& c : cases) {
    std::ofstream(file, std::ios::trunc) << c.content;
    auto s = RoutingStore::open(options());
    ASSERT_FALSE(s.ok()) << c.message;
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidFormat);
    EXPECT_NE(s.error().message().find("routing state " + file.string() + ": " + c.message),
              std::string::npos)
        << s.error().message();
    EXPECT_EQ(read(file), c.content);  // never silently replaced by the config's routes
  }
}

// Found by fuzz_routing_state: a state file at version 2^64-1 opened, the next change wrapped to
// version 0, and the file it wrote could not be opened again (a restart bricked the gateway).
TEST_F(RoutingStoreTest, VersionsStopAtTheLimitAndTheStateStaysReadable) {
  { auto store = open_store(); }
  const fs::path file = dir_ / "routing_state.json";
  const std::string good = read(file);
  auto with_version = [&](uint64_t v) {
    std::string s = good;
    for (const std::string key : {"\"current\":1", "\"version\":1"}) {
      for (auto at = s.find(key); at != std::string::npos; at = s.find(key, at + 1)) {
        s.replace(at, key.size(), key.substr(0, key.size() - 1) + std::to_string(v));
      }
    }
    return s;
  };

  std::ofstream(file, std::ios::trunc) << with_version(kMaxRoutingVersion);
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    EXPECT_EQ(store->current()->version, kMaxRoutingVersion);
    const std::string before = read(file);
    auto changed = store->set_split("smollm2", {{"fp16", 1}}, "alice");
    ASSERT_FALSE(changed.ok());
    EXPECT_EQ(changed.error().code(), ErrorCode::kOutOfRange);
    EXPECT_EQ(read(file), before);
    EXPECT_EQ(store->current()->version, kMaxRoutingVersion);
  }
  EXPECT_TRUE(open_store());

  for (uint64_t v : {kMaxRoutingVersion + 1, std::numeric_limits<uint64_t>::max()}) {
    std::ofstream(file, std::ios::trunc) << with_version(v);
    auto s = RoutingStore::open(options());
    ASSERT_FALSE(s.ok()) << v;
    EXPECT_NE(s.error().message().find("versions[0].version: must be an integer in [1, " +
                                       std::to_string(kMaxRoutingVersion) + "]"),
              std::string::npos)
        << s.error().message();
  }
}

// Found by fuzz_admin_api: an x-qgate-actor header with a raw byte (or cut through a character)
// went into the state file as is, and the next restart refused the file as not UTF-8.
TEST_F(RoutingStoreTest, TheHistoryStoresActorsAsValidUtf8) {
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->set_split("smollm2", {{"fp16", 1}}, "ops\xff").ok());
    ASSERT_TRUE(store->set_drained("awq", true, "\xe6\x9d").ok());  // a character cut short
  }
  auto store = open_store();
  ASSERT_TRUE(store);
  const auto history = store->history();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[1].who, "ops\xef\xbf\xbd");  // U+FFFD
  EXPECT_EQ(history[2].who, "\xef\xbf\xbd");
}

TEST_F(RoutingStoreTest, AFailedWriteChangesNothing) {
  auto store = open_store();
  // A directory where the temp file goes makes the write fail the way a full disk would.
  fs::create_directories(dir_ / "routing_state.json.tmp" / "blocker");
  auto r = store->set_split("smollm2", {{"gptq", 1}}, "alice");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_EQ(store->current()->version, 1u);
  EXPECT_EQ(store->history().size(), 1u);
  EXPECT_FALSE(store->set_drained("gptq", true, "bob").ok());
  EXPECT_TRUE(store->drained().empty());
  fs::remove_all(dir_ / "routing_state.json.tmp");
  r = store->set_split("smollm2", {{"gptq", 1}}, "alice");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->version, 2u);
}

TEST_F(RoutingStoreTest, DrainAndEnableAreRecordedButDoNotMakeVersions) {
  auto store = open_store();
  EXPECT_EQ(store->set_drained("int8", true, "bob").error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(store->set_drained("gptq", true, "bob").ok());
  ASSERT_TRUE(store->set_drained("gptq", true, "bob").ok());  // already drained: no entry
  ASSERT_TRUE(store->set_drained("awq", true, "bob").ok());
  EXPECT_EQ(store->drained(), (std::vector<std::string>{"awq", "gptq"}));
  ASSERT_TRUE(store->set_drained("gptq", false, "carol").ok());
  EXPECT_EQ(store->drained(), std::vector<std::string>{"awq"});
  EXPECT_EQ(store->current()->version, 1u);
  const auto h = store->history();
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[1], (RoutingChange{1, "bob", now_ms_, "drain", "gptq"}));
  EXPECT_EQ(h[3], (RoutingChange{1, "carol", now_ms_, "enable", "gptq"}));
}

TEST_F(RoutingStoreTest, ReadersSeeOnlyWholeSnapshotsWhileWritersPublish) {
  auto store = open_store();
  constexpr int kWrites = 40;
  std::atomic<bool> done{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int64_t> torn{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      uint64_t last = 0;
      while (!done.load()) {
        const auto table = store->current();
        const Route* r = table->find("smollm2");
        // Version v >= 2 was written with gptq weight == v; versions never go backwards.
        if (table->version < last ||
            (table->version >= 2 && r->weight_of("gptq") != table->version)) {
          torn.fetch_add(1);
        }
        last = table->version;
        reads.fetch_add(1);
      }
    });
  }
  for (int v = 2; v < 2 + kWrites; ++v) {
    ASSERT_TRUE(
        store->set_split("smollm2", {{"fp16", 1}, {"gptq", static_cast<double>(v)}}, "w").ok());
  }
  done.store(true);
  for (auto& r : readers) r.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(store->current()->version, static_cast<uint64_t>(1 + kWrites));
}

}  // namespace
}  // namespace qgate

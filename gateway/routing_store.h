// The durable, versioned routing store: the live routing table, every earlier version, the
// history of who changed what when, and the set of drained variants.
//
// Versions: the config file's routes are version 1, created only when the state directory holds
// no state yet. Every split change or rollback makes a new version (numbers only grow; a rollback
// copies an old version's routes into a new one, it never rewrites history). Drain and enable are
// recorded in the history at the current version but do not create one: they are operational
// state, not part of the split, so rolling back a split never undrains a variant.
//
// Durability: each change is serialized with the whole state into `<dir>/routing_state.json`
// atomically -- written to `routing_state.json.tmp`, fsync'd, renamed over the state file, and
// the directory fsync'd -- before it is published in memory; a failed write leaves both the file
// and the live table unchanged. A crash leaves either the old or the new file; a leftover .tmp
// is ignored and removed on open. A state file that does not parse, or whose current version
// does not validate against the configured variants, fails open() with a message naming the
// file and the field: the store never silently resets to the config.
//
// Threading: every method is thread-safe. current() is an atomic load of an immutable snapshot
// and never waits for a writer; changes are serialized by one mutex held across the file write.
// A request keeps the snapshot it loaded, so its route cannot change under it.
#pragma once

#include <atomic>
#include <boost/json/object.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "policies/routing_table.h"

namespace qgate {

struct RoutingChange {
  uint64_t version = 0;  // the version current after the change
  std::string who;       // the admin identity given by the caller ("config" for version 1)
  int64_t when_unix_ms = 0;
  std::string action;  // "initial", "set_split", "rollback", "drain", "enable"
  std::string what;    // human-readable detail, e.g. "smollm2: smollm2-fp16=70 ..."
  bool operator==(const RoutingChange&) const = default;
};

// {"version", "who", "when_unix_ms", "action", "what"}: the state file's and the admin API's form.
boost::json::object routing_change_to_json(const RoutingChange& change);

struct RoutingStoreOptions {
  std::filesystem::path dir;             // created if missing
  std::vector<std::string> variants;     // configured variant names
  std::vector<Route> initial_routes;     // the config's routes: version 1 of a fresh store
  std::function<int64_t()> now_unix_ms;  // wall clock for history; empty = system_clock
};

class RoutingStore {
 public:
  // Loads the latest state from options.dir, or writes version 1 from initial_routes when there is
  // none. InvalidArgument when initial_routes do not validate; InvalidFormat for a corrupt state
  // file; Io when the directory or file cannot be read or written.
  static Result<std::unique_ptr<RoutingStore>> open(RoutingStoreOptions options);

  std::shared_ptr<const RoutingTable> current() const { return current_.load(); }
  // NotFound for a version that never existed.
  Result<std::shared_ptr<const RoutingTable>> version(uint64_t number) const;
  std::vector<RoutingChange> history() const;  // oldest first
  std::vector<std::string> drained() const;    // sorted
  const std::vector<std::string>& variants() const { return variants_; }
  std::filesystem::path state_file() const;

  // Each returns the newly published table. Errors leave the store unchanged: NotFound for an
  // unknown model/version, InvalidArgument for a split that does not validate (message names
  // `routes[i].weights.<variant>`) or when there is no previous version, Io when the state
  // cannot be written.
  Result<std::shared_ptr<const RoutingTable>> set_split(std::string_view model,
                                                        std::vector<VariantWeight> weights,
                                                        std::string_view who);
  Result<std::shared_ptr<const RoutingTable>> rollback_to_previous(std::string_view who);
  // The old version's routes must still validate against the configured variants.
  Result<std::shared_ptr<const RoutingTable>> rollback_to_version(uint64_t number,
                                                                  std::string_view who);
  // All traffic of `model` (every route when empty) to its baseline.
  Result<std::shared_ptr<const RoutingTable>> rollback_to_baseline(std::string_view model,
                                                                   std::string_view who);

  // Durably marks a variant drained (or enabled again). NotFound for an unknown variant. Setting
  // the state it already has is a no-op without a history entry. The caller also applies it to
  // the live health state (OutlierDetector::set_drained), after this returns OK.
  Status set_drained(std::string_view variant, bool drained, std::string_view who);

 private:
  struct State {
    std::vector<std::shared_ptr<const RoutingTable>> versions;  // ascending; back() is current
    std::vector<RoutingChange> history;
    std::vector<std::string> drained;  // sorted, unique
  };

  explicit RoutingStore(RoutingStoreOptions options);
  Status persist_locked(const State& state) const;
  Result<std::shared_ptr<const RoutingTable>> commit_table_locked(RoutingTable table,
                                                                  std::string action,
                                                                  std::string what,
                                                                  std::string_view who);
  int64_t now_ms() const;

  const std::filesystem::path dir_;
  const std::vector<std::string> variants_;
  const std::function<int64_t()> clock_;
  mutable std::mutex mu_;  // serializes changes and guards state_
  State state_;
  std::atomic<std::shared_ptr<const RoutingTable>> current_;
};

}  // namespace qgate

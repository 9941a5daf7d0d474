// Per-variant health: passive outlier detection, active-probe results, and the admin drain flag.
//
// State machine of one variant (times from the injected Clock):
//
//   healthy --(consecutive_failures failures/timeouts in a row)--> ejected
//   ejected --(back-off elapsed)--> half-open            (evaluated lazily on every query)
//   half-open --(half_open_successes successes)--> healthy
//   half-open --(one failure/timeout)--> ejected again, with a longer back-off
//
// The k-th ejection in a row lasts min(base_ejection * 2^(k-1), max_ejection). The count k falls
// back to zero only once the variant has stayed healthy for max_ejection after recovering, so a
// variant that flaps keeps its long back-off. While half-open, at most half_open_max_trials
// requests are admitted at a time, so a sick variant that is 80% of the split is tried by one
// request, not by 80% of the traffic.
//
// Drained is an orthogonal admin flag: a drained variant is never admitted, whatever its health,
// and its health keeps being tracked so it comes back in the right state when enabled.
//
// Outcomes: kFailure and kTimeout count toward ejection; kOverloaded is back-pressure, not
// sickness -- the request moves on along the fallback chain but the variant's health is
// untouched; kSuccess resets the failure run.
//
// Threading: every method is thread-safe (one mutex; each call holds it for a few map lookups).
// Lifetime: the Clock and the detector must outlive every Admission it hands out.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "policies/clock.h"

namespace qgate {

enum class Outcome { kSuccess, kFailure, kTimeout, kOverloaded };
enum class HealthState { kHealthy, kEjected, kHalfOpen };

const char* health_state_name(HealthState state);  // "healthy", "ejected", "half_open"

struct OutlierOptions {
  int consecutive_failures = 5;
  Duration base_ejection = std::chrono::seconds(30);
  Duration max_ejection = std::chrono::minutes(5);
  int half_open_successes = 2;
  int half_open_max_trials = 1;
  // InvalidArgument naming the field: counts must be >= 1, durations > 0, max >= base.
  Status validate() const;
};

struct VariantHealth {
  std::string variant;
  HealthState state = HealthState::kHealthy;
  bool drained = false;
  int consecutive_failures = 0;
  int ejection_streak = 0;        // k of the current/last ejection; sets the back-off
  Duration ejection_remaining{};  // > 0 only while ejected
  uint64_t ejections_total = 0;
};

class OutlierDetector;

// A slot granted by OutlierDetector::admit(). Report the request's outcome once with report();
// a ticket destroyed unreported (client went away) gives its half-open trial slot back without
// judging the variant. Movable, not copyable; used from one thread at a time.
class Admission {
 public:
  Admission() = default;
  Admission(Admission&& other) noexcept;
  Admission& operator=(Admission&& other) noexcept;
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
  ~Admission();

  bool admitted() const { return detector_ != nullptr; }
  explicit operator bool() const { return admitted(); }
  bool trial() const { return trial_; }  // admitted as a half-open trial
  // Feeds the outcome into the variant's state machine; later calls are no-ops. An outcome of a
  // request admitted before the variant's last state change (e.g. it was ejected meanwhile) is
  // ignored: it says nothing about the variant's current episode.
  void report(Outcome outcome);

 private:
  friend class OutlierDetector;
  Admission(OutlierDetector* detector, std::string variant, uint64_t epoch, bool trial)
      : detector_(detector), variant_(std::move(variant)), epoch_(epoch), trial_(trial) {}
  void release();

  OutlierDetector* detector_ = nullptr;
  std::string variant_;
  uint64_t epoch_ = 0;
  bool trial_ = false;
};

class OutlierDetector {
 public:
  // `options` must be valid (QGATE_CHECK); validate it where it is parsed.
  OutlierDetector(OutlierOptions options, const Clock& clock);

  // Whether admit() would grant a slot now (not drained, not ejected, a trial slot free when
  // half-open). For building the candidate list; admit() re-checks.
  bool routable(std::string_view variant) const;
  // A slot for one request to `variant`, or a ticket with admitted() == false. Unknown variants
  // start healthy.
  Admission admit(std::string_view variant);
  // An active probe's result; applies to the current episode. Ignored while ejected (the back-off
  // must run out); in half-open a success counts toward recovery and a failure re-ejects.
  void record_probe(std::string_view variant, Outcome outcome);

  void set_drained(std::string_view variant, bool drained);
  VariantHealth health(std::string_view variant) const;
  std::vector<VariantHealth> all() const;  // every variant seen so far, by name

 private:
  friend class Admission;
  struct State {
    uint64_t epoch = 0;    // bumped on eject and recover; stale reports are dropped
    bool ejected = false;  // with now >= ejected_until this reads as half-open
    TimePoint ejected_until{};
    TimePoint recovered_at{};
    bool drained = false;
    int consecutive_failures = 0;
    int half_open_successes = 0;
    int trials_in_flight = 0;
    int ejection_streak = 0;
    uint64_t ejections_total = 0;
  };

  HealthState state_of(const State& s, TimePoint now) const;
  bool admissible(const State& s, TimePoint now) const;
  State& state_locked(std::string_view variant);
  void apply_locked(State& s, Outcome outcome, TimePoint now);
  void eject_locked(State& s, TimePoint now);
  void on_report(const std::string& variant, uint64_t epoch, bool trial, Outcome outcome);
  void on_release(const std::string& variant, uint64_t epoch);
  VariantHealth describe(const std::string& name, const State& s, TimePoint now) const;

  const OutlierOptions options_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, State, std::less<>> states_;  // guarded by mu_
};

}  // namespace qgate

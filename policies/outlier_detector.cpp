// Outlier detection state machine. See outlier_detector.h for the transitions.
#include "policies/outlier_detector.h"

#include <algorithm>
#include <utility>

namespace qgate {

const char* health_state_name(HealthState state) {
  switch (state) {
    case HealthState::kHealthy:
      return "healthy";
    case HealthState::kEjected:
      return "ejected";
    case HealthState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

Status OutlierOptions::validate() const {
  auto bad = [](const char* field, const char* what) {
    return make_error(ErrorCode::kInvalidArgument, std::string(field) + ": " + what);
  };
  if (consecutive_failures < 1) return bad("consecutive_failures", "must be >= 1");
  if (half_open_successes < 1) return bad("half_open_successes", "must be >= 1");
  if (half_open_max_trials < 1) return bad("half_open_max_trials", "must be >= 1");
  if (base_ejection <= Duration::zero()) return bad("base_ejection", "must be > 0");
  if (max_ejection < base_ejection) return bad("max_ejection", "must be >= base_ejection");
  return Status::Ok();
}

// --- Admission ------------------------------------------------------------------------------

Admission::Admission(Admission&& other) noexcept
    : detector_(std::exchange(other.detector_, nullptr)),
      variant_(std::move(other.variant_)),
      epoch_(other.epoch_),
      trial_(other.trial_) {}

Admission& Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    release();
    detector_ = std::exchange(other.detector_, nullptr);
    variant_ = std::move(other.variant_);
    epoch_ = other.epoch_;
    trial_ = other.trial_;
  }
  return *this;
}

Admission::~Admission() { release(); }

void Admission::report(Outcome outcome) {
  if (detector_ == nullptr) return;
  detector_->on_report(variant_, epoch_, trial_, outcome);
  detector_ = nullptr;
}

void Admission::release() {
  if (detector_ == nullptr) return;
  if (trial_) detector_->on_release(variant_, epoch_);
  detector_ = nullptr;
}

// --- OutlierDetector ------------------------------------------------------------------------

OutlierDetector::OutlierDetector(OutlierOptions options, const Clock& clock)
    : options_(options), clock_(clock) {
  QGATE_CHECK(options_.validate().ok(), "OutlierOptions must be validated before use");
}

HealthState OutlierDetector::state_of(const State& s, TimePoint now) const {
  if (!s.ejected) return HealthState::kHealthy;
  return now < s.ejected_until ? HealthState::kEjected : HealthState::kHalfOpen;
}

bool OutlierDetector::admissible(const State& s, TimePoint now) const {
  if (s.drained) return false;
  switch (state_of(s, now)) {
    case HealthState::kHealthy:
      return true;
    case HealthState::kEjected:
      return false;
    case HealthState::kHalfOpen:
      return s.trials_in_flight < options_.half_open_max_trials;
  }
  return false;
}

OutlierDetector::State& OutlierDetector::state_locked(std::string_view variant) {
  auto it = states_.find(variant);
  if (it == states_.end()) it = states_.emplace(std::string(variant), State{}).first;
  return it->second;
}

void OutlierDetector::eject_locked(State& s, TimePoint now) {
  // A variant that fails again soon after recovering continues its streak; one that stayed
  // healthy for a full max_ejection starts over at the base back-off.
  const bool streak_expired =
      !s.ejected && s.ejection_streak > 0 && now - s.recovered_at >= options_.max_ejection;
  if (streak_expired) s.ejection_streak = 0;
  s.ejection_streak += 1;
  Duration backoff = options_.base_ejection;
  for (int i = 1; i < s.ejection_streak && backoff < options_.max_ejection; ++i) backoff *= 2;
  backoff = std::min(backoff, options_.max_ejection);
  s.ejected = true;
  s.ejected_until = now + backoff;
  s.consecutive_failures = 0;
  s.half_open_successes = 0;
  s.trials_in_flight = 0;
  s.ejections_total += 1;
  s.epoch += 1;
}

void OutlierDetector::apply_locked(State& s, Outcome outcome, TimePoint now) {
  if (outcome == Outcome::kOverloaded) return;
  const bool failed = outcome == Outcome::kFailure || outcome == Outcome::kTimeout;
  switch (state_of(s, now)) {
    case HealthState::kEjected:
      return;  // only the back-off running out readmits an ejected variant
    case HealthState::kHalfOpen:
      if (failed) {
        eject_locked(s, now);
      } else if (++s.half_open_successes >= options_.half_open_successes) {
        s.ejected = false;
        s.recovered_at = now;
        s.consecutive_failures = 0;
        s.half_open_successes = 0;
        s.trials_in_flight = 0;
        s.epoch += 1;
      }
      return;
    case HealthState::kHealthy:
      if (!failed) {
        s.consecutive_failures = 0;
      } else if (++s.consecutive_failures >= options_.consecutive_failures) {
        eject_locked(s, now);
      }
      return;
  }
}

bool OutlierDetector::routable(std::string_view variant) const {
  std::lock_guard lock(mu_);
  auto it = states_.find(variant);
  return it == states_.end() || admissible(it->second, clock_.now());
}

Admission OutlierDetector::admit(std::string_view variant) {
  std::lock_guard lock(mu_);
  State& s = state_locked(variant);
  const TimePoint now = clock_.now();
  if (!admissible(s, now)) return {};
  const bool trial = state_of(s, now) == HealthState::kHalfOpen;
  if (trial) s.trials_in_flight += 1;
  return Admission(this, std::string(variant), s.epoch, trial);
}

void OutlierDetector::on_report(const std::string& variant, uint64_t epoch, bool trial,
                                Outcome outcome) {
  std::lock_guard lock(mu_);
  State& s = state_locked(variant);
  if (s.epoch != epoch) return;
  if (trial && s.trials_in_flight > 0) s.trials_in_flight -= 1;
  apply_locked(s, outcome, clock_.now());
}

void OutlierDetector::on_release(const std::string& variant, uint64_t epoch) {
  std::lock_guard lock(mu_);
  State& s = state_locked(variant);
  if (s.epoch == epoch && s.trials_in_flight > 0) s.trials_in_flight -= 1;
}

void OutlierDetector::record_probe(std::string_view variant, Outcome outcome) {
  std::lock_guard lock(mu_);
  apply_locked(state_locked(variant), outcome, clock_.now());
}

void OutlierDetector::set_drained(std::string_view variant, bool drained) {
  std::lock_guard lock(mu_);
  state_locked(variant).drained = drained;
}

VariantHealth OutlierDetector::describe(const std::string& name, const State& s,
                                        TimePoint now) const {
  VariantHealth h;
  h.variant = name;
  h.state = state_of(s, now);
  h.drained = s.drained;
  h.consecutive_failures = s.consecutive_failures;
  h.ejection_streak = s.ejection_streak;
  if (h.state == HealthState::kEjected) h.ejection_remaining = s.ejected_until - now;
  h.ejections_total = s.ejections_total;
  return h;
}

VariantHealth OutlierDetector::health(std::string_view variant) const {
  std::lock_guard lock(mu_);
  auto it = states_.find(variant);
  if (it == states_.end()) return describe(std::string(variant), State{}, clock_.now());
  return describe(it->first, it->second, clock_.now());
}

std::vector<VariantHealth> OutlierDetector::all() const {
  std::lock_guard lock(mu_);
  const TimePoint now = clock_.now();
  std::vector<VariantHealth> out;
  out.reserve(states_.size());
  for (const auto& [name, s] : states_) out.push_back(describe(name, s, now));
  return out;
}

}  // namespace qgate

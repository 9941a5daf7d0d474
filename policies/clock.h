// A monotonic clock the health policies read through, so tests can drive time by hand.
//
// Policies that measure time (outlier ejection back-off, half-open recovery) take a `const Clock&`
// instead of calling steady_clock directly: production passes SteadyClock::instance(), tests a
// FakeClock they advance explicitly -- no sleeps, no flakiness. The clock must outlive every
// object that holds a reference to it.
#pragma once

#include <atomic>
#include <chrono>

namespace qgate {

using Duration = std::chrono::steady_clock::duration;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  // Never goes backwards. Safe to call from any thread.
  virtual TimePoint now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  static const SteadyClock& instance() {
    static const SteadyClock clock;
    return clock;
  }
};

// Starts at an arbitrary fixed point and moves only when told. Thread-safe: readers on other
// threads see the latest advance().
class FakeClock final : public Clock {
 public:
  TimePoint now() const override { return TimePoint(Duration(ticks_.load())); }
  void advance(Duration d) { ticks_.fetch_add(d.count()); }

 private:
  // A non-zero start keeps "time zero" from looking like an unset value in tests.
  std::atomic<Duration::rep> ticks_{
      std::chrono::duration_cast<Duration>(std::chrono::hours(1)).count()};
};

}  // namespace qgate

// Weighted choice for traffic splitting: a one-off weighted pick, and sticky assignment by
// weighted rendezvous hashing.
//
// Pure functions over caller-owned data: no state, no locks, safe from any thread.
//
// Sticky assignment (rendezvous_pick): every (key, candidate) pair gets a score
// -weight / ln(h), with h a hash of the pair mapped into (0, 1); the highest score wins. This is
// weighted rendezvous (highest-random-weight) hashing (Schindelhauer & Schomaker, "Weighted
// distributed hash tables", 2005): a key lands on a candidate with probability weight / sum, and
// when weights change only the keys that must move do move -- raising one weight moves keys only
// onto that candidate, removing a candidate moves only its own keys.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "kernels/status.h"

namespace qgate {

// Index drawn from `weights` by u01 in [0, 1): the first index whose cumulative weight exceeds
// u01 * total. Zero weights are never chosen. InvalidArgument for an empty list, a negative,
// NaN or infinite weight, all weights zero, or u01 outside [0, 1).
Result<size_t> weighted_pick(std::span<const double> weights, double u01);

struct WeightedCandidate {
  std::string_view id;  // stable across configuration versions; only read during the call
  double weight = 0.0;  // >= 0; 0 means "never chosen"
};

// Index of the candidate that `key` is assigned to. Same errors as weighted_pick (no u01).
// Equal scores (only possible with duplicate ids) go to the lower index.
Result<size_t> rendezvous_pick(std::span<const WeightedCandidate> candidates, std::string_view key);

// The pair hash behind rendezvous_pick, exposed for tests and tooling: FNV-1a 64 over
// [8-byte little-endian key length][key][id], finished with the SplitMix64 finalizer. The length
// prefix keeps ("ab", "c") and ("a", "bc") apart; the finalizer spreads FNV's weak low-order
// mixing over all 64 bits.
uint64_t rendezvous_hash(std::string_view key, std::string_view id);

}  // namespace qgate

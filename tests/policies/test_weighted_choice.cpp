// weighted_pick and rendezvous_pick on fixed data: shares, stability under weight changes, and
// errors. Keys are "user-<i>"; there is no randomness.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "policies/weighted_choice.h"

namespace qgate {
namespace {

constexpr int kKeys = 100000;

std::string key(int i) { return "user-" + std::to_string(i); }

std::vector<size_t> assign_all(const std::vector<WeightedCandidate>& candidates) {
  std::vector<size_t> out;
  out.reserve(kKeys);
  for (int i = 0; i < kKeys; ++i) {
    auto r = rendezvous_pick(candidates, key(i));
    EXPECT_TRUE(r.ok());
    out.push_back(r.ok() ? *r : 0);
  }
  return out;
}

void expect_shares(const std::vector<WeightedCandidate>& candidates) {
  double total = 0.0;
  for (const auto& c : candidates) total += c.weight;
  std::vector<int> counts(candidates.size(), 0);
  for (size_t a : assign_all(candidates)) ++counts[a];
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double p = candidates[i].weight / total;
    const double sigma = std::sqrt(kKeys * p * (1.0 - p));
    EXPECT_NEAR(counts[i], kKeys * p, 5.0 * sigma) << "candidate " << candidates[i].id;
  }
}

TEST(WeightedPickTest, MapsTheUnitIntervalOntoCumulativeWeights) {
  const std::vector<double> w = {1.0, 0.0, 3.0};
  EXPECT_EQ(*weighted_pick(w, 0.0), 0u);
  EXPECT_EQ(*weighted_pick(w, 0.2499), 0u);
  EXPECT_EQ(*weighted_pick(w, 0.25), 2u);  // the zero weight in between is skipped
  EXPECT_EQ(*weighted_pick(w, 0.9999999), 2u);
  const std::vector<double> trailing_zero = {2.0, 0.0};
  EXPECT_EQ(*weighted_pick(trailing_zero, std::nextafter(1.0, 0.0)), 0u);
  const std::vector<double> leading_zero = {0.0, 5.0};
  EXPECT_EQ(*weighted_pick(leading_zero, 0.0), 1u);
}

TEST(WeightedPickTest, SharesFollowWeightsOverAUniformGrid) {
  const std::vector<double> w = {70.0, 20.0, 10.0};
  std::vector<int> counts(3, 0);
  const int n = 1000;
  for (int i = 0; i < n; ++i) ++counts[*weighted_pick(w, (i + 0.5) / n)];
  EXPECT_EQ(counts, (std::vector<int>{700, 200, 100}));
}

TEST(WeightedPickTest, RejectsBadInput) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::vector<double>> bad = {{}, {0.0, 0.0}, {1.0, -1.0}, {nan, 1.0}, {inf}};
  for (const auto& w : bad) {
    auto r = weighted_pick(w, 0.5);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  }
  auto negative = weighted_pick(std::vector<double>{1.0, -1.0}, 0.5);
  EXPECT_NE(negative.error().message().find("weights[1]"), std::string::npos);
  const std::vector<double> ok = {1.0};
  EXPECT_FALSE(weighted_pick(ok, 1.0).ok());
  EXPECT_FALSE(weighted_pick(ok, -0.1).ok());
  EXPECT_FALSE(weighted_pick(ok, nan).ok());
}

TEST(RendezvousTest, SharesMatchWeights) {
  expect_shares({{"fp16", 70.0}, {"gptq", 20.0}, {"awq", 10.0}});
  expect_shares({{"a", 1.0}, {"b", 1.0}, {"c", 1.0}, {"d", 1.0}});
}

TEST(RendezvousTest, IsDeterministicAndIndependentOfCandidateOrder) {
  const std::vector<WeightedCandidate> forward = {{"fp16", 5.0}, {"gptq", 3.0}, {"awq", 2.0}};
  const std::vector<WeightedCandidate> backward = {{"awq", 2.0}, {"gptq", 3.0}, {"fp16", 5.0}};
  for (int i = 0; i < 2000; ++i) {
    const size_t a = *rendezvous_pick(forward, key(i));
    EXPECT_EQ(*rendezvous_pick(forward, key(i)), a);
    EXPECT_EQ(backward[*rendezvous_pick(backward, key(i))].id, forward[a].id);
  }
  // Pinned hash values (computed independently in Python from the documented algorithm): the
  // assignment must survive rebuilds and platforms.
  EXPECT_EQ(rendezvous_hash("", ""), 0x813f0174a2367c13ULL);
  EXPECT_EQ(rendezvous_hash("user-1", "fp16"), 0xd993f7445f93e4fbULL);
  EXPECT_NE(rendezvous_hash("ab", "c"), rendezvous_hash("a", "bc"));
}

TEST(RendezvousTest, RaisingOneWeightMovesTheMinimumAndOnlyTowardIt) {
  const auto before = assign_all({{"A", 70.0}, {"B", 30.0}});
  const auto after = assign_all({{"A", 60.0}, {"B", 40.0}});
  int moved = 0;
  for (int i = 0; i < kKeys; ++i) {
    if (before[i] == after[i]) continue;
    ++moved;
    EXPECT_EQ(before[i], 0u) << key(i);  // only A -> B
    EXPECT_EQ(after[i], 1u) << key(i);
  }
  // The minimum possible is the 10% share change; 5 sigma of a binomial at p = 0.1.
  const double sigma = std::sqrt(kKeys * 0.1 * 0.9);
  EXPECT_NEAR(moved, 0.1 * kKeys, 5.0 * sigma);
}

TEST(RendezvousTest, RemovingACandidateMovesOnlyItsKeys) {
  const auto before = assign_all({{"A", 50.0}, {"B", 30.0}, {"C", 20.0}});
  const auto after = assign_all({{"A", 50.0}, {"C", 20.0}});  // B removed; C is now index 1
  const size_t remap[] = {0, 99, 1};
  int moved = 0;
  for (int i = 0; i < kKeys; ++i) {
    if (before[i] == 1) {
      ++moved;
      continue;  // B's keys go wherever they go
    }
    EXPECT_EQ(after[i], remap[before[i]]) << key(i);
  }
  EXPECT_GT(moved, 0);
  // A zero weight behaves like removal.
  const auto zeroed = assign_all({{"A", 50.0}, {"B", 0.0}, {"C", 20.0}});
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_NE(zeroed[i], 1u);
    EXPECT_EQ(zeroed[i] == 0 ? 0u : 1u, after[i]) << key(i);
  }
}

TEST(RendezvousTest, RejectsBadWeights) {
  EXPECT_FALSE(rendezvous_pick({}, "k").ok());
  const std::vector<WeightedCandidate> zero = {{"a", 0.0}, {"b", 0.0}};
  EXPECT_FALSE(rendezvous_pick(zero, "k").ok());
  const std::vector<WeightedCandidate> negative = {{"a", 1.0}, {"b", -2.0}};
  auto r = rendezvous_pick(negative, "k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("weights[1]"), std::string::npos);
  const std::vector<WeightedCandidate> nan = {{"a", std::nan("")}};
  EXPECT_FALSE(rendezvous_pick(nan, "k").ok());
}

}  // namespace
}  // namespace qgate

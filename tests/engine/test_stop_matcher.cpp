// StopMatcher: hold-back, cuts, multiple and overlapping stop strings, UTF-8, and agreement
// between streamed pieces and the whole text at once.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "engine/stop_matcher.h"

namespace qgate {
namespace {

struct Streamed {
  std::vector<std::string> emitted;  // text returned by each push
  std::string text;                  // everything emitted, flush included
  bool stopped = false;
};

Streamed stream(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
  StopMatcher m(stops);
  Streamed s;
  for (const auto& p : pieces) {
    StopMatcher::Output out = m.push(p);
    s.emitted.push_back(out.text);
    s.text += out.text;
    if (out.stopped) {
      s.stopped = true;
      break;
    }
  }
  if (!s.stopped) s.text += m.flush();
  return s;
}

TEST(StopMatcherTest, PassesTextThroughWithoutStopStrings) {
  auto s = stream({}, {"Hello", ", ", "world"});
  EXPECT_EQ(s.emitted, (std::vector<std::string>{"Hello", ", ", "world"}));
  EXPECT_FALSE(s.stopped);
}

TEST(StopMatcherTest, EmitsImmediatelyWhatCannotStartAStop) {
  auto s = stream({"###"}, {"abc", "def"});
  EXPECT_EQ(s.emitted, (std::vector<std::string>{"abc", "def"}));
}

TEST(StopMatcherTest, HoldsBackAPossiblePrefixUntilDisambiguated) {
  StopMatcher m({"<end>"});
  auto a = m.push("Hi <e");
  EXPECT_EQ(a.text, "Hi ");
  EXPECT_FALSE(a.stopped);
  auto b = m.push("n");
  EXPECT_EQ(b.text, "");
  auto c = m.push("x!");  // "<enx!" cannot become "<end>"
  EXPECT_EQ(c.text, "<enx!");
  EXPECT_FALSE(c.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcherTest, CutsRightBeforeTheStopAndEmitsNothingAfter) {
  StopMatcher m({"STOP"});
  auto a = m.push("one two ST");
  EXPECT_EQ(a.text, "one two ");
  auto b = m.push("OP three");
  EXPECT_EQ(b.text, "");
  EXPECT_TRUE(b.stopped);
  EXPECT_TRUE(m.stopped());
  auto c = m.push("more");
  EXPECT_EQ(c.text, "");
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcherTest, MatchesInsideOnePiece) {
  auto s = stream({"\n\n"}, {"line one\n\nline two"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "line one");
}

TEST(StopMatcherTest, MatchesAcrossManyPieces) {
  auto s = stream({"<|im_end|>"}, {"Sure", ".", "<", "|", "im", "_", "end", "|", ">", "tail"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "Sure.");
  EXPECT_EQ(s.emitted.size(), 9u);  // stopped at the piece that completed it
}

TEST(StopMatcherTest, HandlesOverlappingCandidates) {
  // "aababc": the held "a" turns out not to start the match, the second "a" does.
  auto s = stream({"abc"}, {"a", "a", "b", "a", "b", "c", "z"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "aab");
  auto whole = stream({"abc"}, {"aababc"});
  EXPECT_EQ(whole.text, "aab");
  // Self-overlapping stop string: "aab" inside "aaab".
  EXPECT_EQ(stream({"aab"}, {"a", "a", "a", "b"}).text, "a");
}

TEST(StopMatcherTest, FlushReturnsHeldTextAtEndOfStream) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("end </").text, "end ");
  EXPECT_EQ(m.flush(), "</");
  EXPECT_FALSE(m.stopped());
  // Flushing leaves a clean state: nothing is held any more.
  EXPECT_EQ(m.push("x").text, "x");
}

TEST(StopMatcherTest, FirstCompletedStopWinsAmongSeveral) {
  // "bc" completes before "abcd" would; the cut is before "bc".
  EXPECT_EQ(stream({"abcd", "bc"}, {"abcd"}).text, "a");
  EXPECT_EQ(stream({"abcd", "bc"}, {"a", "b", "c", "d"}).text, "a");
  // Two stops completing at the same byte: the longer (earlier-starting) one is cut.
  EXPECT_EQ(stream({"c", "abc"}, {"xab", "c"}).text, "x");
  // Holding back uses the longest candidate prefix over all stops.
  StopMatcher m({"END", "xyzzy"});
  EXPECT_EQ(m.push("..xyz").text, "..");
  EXPECT_EQ(m.push("E").text, "xyz");
  EXPECT_EQ(m.push("ND").text, "");
  EXPECT_TRUE(m.stopped());
}

TEST(StopMatcherTest, WorksOnUtf8Bytes) {
  // "停止" is 6 bytes; pieces are whole characters.
  auto s = stream({"停止"}, {"好的", "。", "停", "止", "后面"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.text, "好的。");
  // A held character that shares its lead bytes with the stop is emitted whole once it differs.
  StopMatcher m({"停止"});
  EXPECT_EQ(m.push("停").text, "");
  EXPECT_EQ(m.push("下").text, "停下");
  // Different characters with a common lead byte (E5 81 9C vs E5 81 9A) never split a character.
  StopMatcher m2({"停"});
  EXPECT_EQ(m2.push("做").text, "做");
  EXPECT_EQ(stream({"é"}, {"caf", "é", "!"}).text, "caf");
}

// Streaming in arbitrary pieces must agree with matching the whole text at once.
TEST(StopMatcherTest, PieceBoundariesDoNotChangeTheResult) {
  const std::vector<std::string> stops = {"abc", "bca", "cc", "aaaa"};
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const size_t len = 1 + rng() % 24;
    for (size_t i = 0; i < len; ++i) text.push_back(static_cast<char>('a' + rng() % 3));
    const Streamed whole = stream(stops, {text});
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t n = 1 + rng() % 4;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    const Streamed split = stream(stops, pieces);
    ASSERT_EQ(split.text, whole.text) << text;
    ASSERT_EQ(split.stopped, whole.stopped) << text;
    // The emitted text never contains a stop string and is a prefix of the input.
    for (const auto& stop : stops) ASSERT_EQ(split.text.find(stop), std::string::npos) << text;
    ASSERT_EQ(text.rfind(split.text, 0), 0u) << text;
  }
}

TEST(StopMatcherTest, ValidateNamesTheOffendingIndex) {
  EXPECT_TRUE(StopMatcher::validate(std::vector<std::string>{"a", "<|im_end|>"}).ok());
  Status empty = StopMatcher::validate(std::vector<std::string>{"ok", ""});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(empty.error().message().find("stop[1]"), std::string::npos);
  Status too_long = StopMatcher::validate(
      std::vector<std::string>{std::string(StopMatcher::kMaxStopBytes + 1, 'x')});
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message().find("stop[0]"), std::string::npos);
  std::vector<std::string> many(StopMatcher::kMaxStopStrings + 1, "x");
  EXPECT_FALSE(StopMatcher::validate(many).ok());
}

}  // namespace
}  // namespace qgate

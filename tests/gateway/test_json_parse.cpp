// parse_json: simdjson's reading of JSON text as Boost.JSON values.
#include <gtest/gtest.h>

#include <bit>
#include <boost/json/serialize.hpp>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "gateway/json_parse.h"

namespace qgate {
namespace {

namespace json = boost::json;

TEST(ParseJson, ConvertsEveryKind) {
  auto v =
      parse_json(R"({"s":"caf\u00e9","i":-3,"u":18446744073709551615,"d":0.25,"b":true,"n":null,)"
                 R"("a":[1,[2,{}]],"o":{"k":"v"}})");
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  const json::object& o = v->as_object();
  EXPECT_EQ(o.at("s").as_string(), "caf\xc3\xa9");
  EXPECT_EQ(o.at("i").as_int64(), -3);
  EXPECT_EQ(o.at("u").as_uint64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(o.at("d").as_double(), 0.25);
  EXPECT_TRUE(o.at("b").as_bool());
  EXPECT_TRUE(o.at("n").is_null());
  EXPECT_EQ(json::serialize(o.at("a")), "[1,[2,{}]]");
  EXPECT_EQ(o.at("o").at("k").as_string(), "v");
}

// Boost.JSON 1.81's own parser gives about 29% of these back one ulp off.
TEST(ParseJson, DoublesSurviveBoostSerializationBitForBit) {
  std::mt19937_64 rng(7);
  int checked = 0;
  for (int i = 0; i < 20000; ++i) {
    const double x = std::bit_cast<double>(rng());
    if (!std::isfinite(x)) continue;
    const std::string text = json::serialize(json::value(x));
    auto back = parse_json(text);
    ASSERT_TRUE(back.ok()) << text;
    ASSERT_EQ(std::bit_cast<uint64_t>(back->as_double()), std::bit_cast<uint64_t>(x)) << text;
    ++checked;
  }
  EXPECT_GT(checked, 19000);
  // The weight fuzz_routing_state found drifting across a restart.
  const double w = 1.1113111111111111e107;
  EXPECT_EQ(parse_json(json::serialize(json::value(w)))->as_double(), w);
}

TEST(ParseJson, RefusesRepeatedNamesWithTheirPath) {
  auto top = parse_json(R"({"a":1,"b":2,"a":3})");
  ASSERT_FALSE(top.ok());
  EXPECT_EQ(top.error().code(), ErrorCode::kInvalidFormat);
  EXPECT_EQ(top.error().message(), "\"a\" is given more than once");
  auto nested = parse_json(R"({"routes":[{"weights":{"x":1,"x":2}}]})");
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.error().message(), "routes[0].weights: \"x\" is given more than once");
}

TEST(ParseJson, RefusesWhatIsNotJson) {
  for (const std::string& text :
       {std::string(""), std::string("{"), std::string("[1,]"), std::string("{\"a\":1} x"),
        std::string("1e400"), std::string("18446744073709551616"), std::string("\"\xff\""),
        std::string("{'a':1}")}) {
    auto v = parse_json(text);
    EXPECT_FALSE(v.ok()) << text;
    if (!v.ok()) {
      EXPECT_EQ(v.error().code(), ErrorCode::kInvalidFormat) << text;
    }
  }
}

}  // namespace
}  // namespace qgate

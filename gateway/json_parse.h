// JSON text -> boost::json::value, read by simdjson.
//
// qgate writes JSON with Boost.JSON and reads it with simdjson, the stack's parser. Boost.JSON
// 1.81's own parser converts numbers imprecisely: about 29% of random finite doubles came back one
// ulp away from their own serialization (measured on 10^6), so a routing weight would not survive
// a restart bit for bit (found by fuzz_routing_state). simdjson rounds correctly, validates UTF-8,
// and refuses numbers that do not fit 64 bits. A name repeated within one object is refused too:
// JSON leaves it undefined and readers disagree on which one counts.
#pragma once

#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "kernels/status.h"

namespace simdjson::dom {
class object;
}  // namespace simdjson::dom

namespace qgate {

// InvalidFormat with simdjson's message, or naming the path of a repeated name
// (`routes[0].weights: "m-fp16" is given more than once`).
Result<boost::json::value> parse_json(std::string_view text);

// For readers that walk simdjson's DOM themselves (the OpenAI request parser): a name given more
// than once in `obj` (the first in byte order), or nothing.
std::optional<std::string> repeated_name(const simdjson::dom::object& obj);

}  // namespace qgate

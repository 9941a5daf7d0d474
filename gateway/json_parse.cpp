#include "gateway/json_parse.h"

#include <simdjson.h>

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <string>
#include <vector>

namespace qgate {

namespace {

namespace json = boost::json;
using simdjson::dom::element;
using simdjson::dom::element_type;

Result<json::value> convert(const element& e, const std::string& path) {
  switch (e.type()) {
    case element_type::OBJECT: {
      const simdjson::dom::object obj = e.get_object().value_unsafe();
      if (auto dup = repeated_name(obj)) {
        return make_error(ErrorCode::kInvalidFormat, (path.empty() ? "" : path + ": ") + "\"" +
                                                         *dup + "\" is given more than once");
      }
      json::object out;
      out.reserve(obj.size());
      for (auto field : obj) {
        const std::string key(field.key);
        QGATE_ASSIGN_OR_RETURN(json::value v,
                               convert(field.value, path.empty() ? key : path + "." + key));
        out.emplace(key, std::move(v));
      }
      return json::value(std::move(out));
    }
    case element_type::ARRAY: {
      const simdjson::dom::array arr = e.get_array().value_unsafe();
      json::array out;
      out.reserve(arr.size());
      size_t i = 0;
      for (element item : arr) {
        QGATE_ASSIGN_OR_RETURN(json::value v,
                               convert(item, path + "[" + std::to_string(i++) + "]"));
        out.push_back(std::move(v));
      }
      return json::value(std::move(out));
    }
    case element_type::STRING:
      return json::value(json::string(e.get_string().value_unsafe()));
    case element_type::INT64:
      return json::value(e.get_int64().value_unsafe());
    case element_type::UINT64:
      return json::value(e.get_uint64().value_unsafe());
    case element_type::DOUBLE:
      return json::value(e.get_double().value_unsafe());
    case element_type::BOOL:
      return json::value(e.get_bool().value_unsafe());
    case element_type::NULL_VALUE:
      return json::value(nullptr);
  }
  return make_error(ErrorCode::kInvalidFormat, path + ": unknown JSON type");
}

}  // namespace

std::optional<std::string> repeated_name(const simdjson::dom::object& obj) {
  std::vector<std::string_view> keys;
  keys.reserve(obj.size());
  for (auto field : obj) keys.push_back(field.key);
  std::sort(keys.begin(), keys.end());
  const auto dup = std::adjacent_find(keys.begin(), keys.end());
  if (dup == keys.end()) return std::nullopt;
  return std::string(*dup);
}

Result<json::value> parse_json(std::string_view text) {
  // The parser is reused per thread: its buffers grow to the largest document seen.
  thread_local simdjson::dom::parser parser;
  element root;
  if (auto err = parser.parse(text.data(), text.size()).get(root); err != simdjson::SUCCESS) {
    return make_error(ErrorCode::kInvalidFormat, simdjson::error_message(err));
  }
  return convert(root, "");
}

}  // namespace qgate

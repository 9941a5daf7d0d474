#include "gateway/openai_api.h"

#include <simdjson.h>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <cstdio>
#include <optional>

#include "gateway/json_parse.h"

namespace qgate {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

std::string type_name(element_type t) {
  switch (t) {
    case element_type::ARRAY: return "an array";
    case element_type::OBJECT: return "an object";
    case element_type::INT64:
    case element_type::UINT64: return "an integer";
    case element_type::DOUBLE: return "a number";
    case element_type::STRING: return "a string";
    case element_type::BOOL: return "a boolean";
    case element_type::NULL_VALUE: return "null";
  }
  return "a value";
}

ApiError wrong_type(const std::string& param, const char* expected, const element& e) {
  return ApiError::invalid_request(
      param, "'" + param + "' must be " + expected + ", got " + type_name(e.type()));
}

// JSON leaves repeated names undefined and readers differ (first wins, last wins, simdjson's
// lookups take the first while a loop over the fields sees every one), so a proxy or filter in
// front of qgate could check one reading of a body while qgate acts on another. A repeated name
// in any object the request is read from is refused instead. `where` is the object's path.
std::optional<ApiError> refuse_duplicate_keys(const simdjson::dom::object& obj,
                                              const std::string& where) {
  const std::optional<std::string> name = repeated_name(obj);
  if (!name) return std::nullopt;
  const std::string param = where.empty() ? *name : where + "." + *name;
  return ApiError::invalid_request(param, "'" + param + "' is given more than once");
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

bool is_null(const element& e) { return e.type() == element_type::NULL_VALUE; }
bool is_number(const element& e) {
  return e.type() == element_type::INT64 || e.type() == element_type::UINT64 ||
         e.type() == element_type::DOUBLE;
}

// Typed readers. A disengaged optional with no error means `null` (not given).
template <typename T>
struct Read {
  std::optional<T> value;
  std::optional<ApiError> error;
};

Read<std::string> read_string(const element& e, const std::string& param) {
  if (is_null(e)) return {};
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) return {{}, wrong_type(param, "a string", e)};
  return {std::string(s), {}};
}

Read<bool> read_bool(const element& e, const std::string& param) {
  if (is_null(e)) return {};
  bool b = false;
  if (e.get_bool().get(b) != simdjson::SUCCESS) return {{}, wrong_type(param, "a boolean", e)};
  return {b, {}};
}

Read<int64_t> read_int(const element& e, const std::string& param) {
  if (is_null(e)) return {};
  if (e.type() == element_type::UINT64) {
    return {{}, ApiError::invalid_request(param, "'" + param + "' is out of range")};
  }
  int64_t v = 0;
  if (e.get_int64().get(v) != simdjson::SUCCESS) return {{}, wrong_type(param, "an integer", e)};
  return {v, {}};
}

Read<double> read_number(const element& e, const std::string& param) {
  if (is_null(e)) return {};
  double v = 0;
  if (!is_number(e) || e.get_double().get(v) != simdjson::SUCCESS) {
    return {{}, wrong_type(param, "a number", e)};
  }
  return {v, {}};
}

// A number within [lo, hi]; `open_lo` excludes lo.
std::optional<ApiError> read_range(const element& e, const std::string& param, double lo,
                                   double hi, bool open_lo, float& out) {
  auto r = read_number(e, param);
  if (r.error) return r.error;
  if (!r.value) return std::nullopt;
  const double v = *r.value;
  if ((open_lo ? !(v > lo) : !(v >= lo)) || !(v <= hi)) {
    std::string range(open_lo ? "(" : "[");
    range.append(number(lo)).append(", ").append(number(hi)).append("]");
    return ApiError::invalid_request(param, "'" + param + "' must be in " + range + ", got " +
                                                number(v));
  }
  out = static_cast<float>(v);
  return std::nullopt;
}

// Text of a message's `content`: a string, or an array of {type: "text", text} parts joined.
Read<std::string> read_content(const element& e, const std::string& param) {
  if (e.type() == element_type::STRING) return read_string(e, param);
  if (e.type() != element_type::ARRAY) {
    return {{}, wrong_type(param, "a string or an array of text parts", e)};
  }
  std::string text;
  size_t i = 0;
  const simdjson::dom::array parts = e.get_array().value_unsafe();  // a local: ranged-for over
  for (element part : parts) {                                        // a temporary would dangle
    const std::string p = param + "[" + std::to_string(i++) + "]";
    simdjson::dom::object obj;
    if (part.get_object().get(obj) != simdjson::SUCCESS) return {{}, wrong_type(p, "an object", part)};
    if (auto err = refuse_duplicate_keys(obj, p)) return {{}, std::move(err)};
    std::string_view type;
    if (obj["type"].get_string().get(type) != simdjson::SUCCESS) {
      return {{}, ApiError::invalid_request(p + ".type", "'" + p + ".type' must be a string")};
    }
    if (type != "text") {
      return {{}, ApiError::unsupported(p + ".type", "content parts of type '" + std::string(type) +
                                                         "' are not supported; only 'text'")};
    }
    std::string_view t;
    if (obj["text"].get_string().get(t) != simdjson::SUCCESS) {
      return {{}, ApiError::invalid_request(p + ".text", "'" + p + ".text' must be a string")};
    }
    text.append(t);
  }
  return {std::move(text), {}};
}

std::optional<ApiError> parse_messages(const element& e, std::vector<ChatMessage>& out) {
  simdjson::dom::array arr;
  if (e.get_array().get(arr) != simdjson::SUCCESS) return wrong_type("messages", "an array", e);
  if (arr.size() == 0) {
    return ApiError::invalid_request("messages", "'messages' must contain at least one message");
  }
  size_t i = 0;
  for (element m : arr) {
    const std::string p = "messages[" + std::to_string(i++) + "]";
    simdjson::dom::object obj;
    if (m.get_object().get(obj) != simdjson::SUCCESS) return wrong_type(p, "an object", m);
    if (auto err = refuse_duplicate_keys(obj, p)) return err;
    ChatMessage msg;
    element role_el;
    if (obj["role"].get(role_el) != simdjson::SUCCESS) {
      return ApiError::invalid_request(p + ".role", "'" + p + ".role' is required");
    }
    auto role = read_string(role_el, p + ".role");
    if (role.error) return role.error;
    if (!role.value) return ApiError::invalid_request(p + ".role", "'" + p + ".role' is required");
    msg.role = *role.value == "developer" ? "system" : *role.value;
    if (msg.role == "tool" || msg.role == "function") {
      return ApiError::unsupported(p + ".role", "role '" + msg.role + "' is not supported");
    }
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return ApiError::invalid_request(
          p + ".role", "'" + p + ".role' must be one of system, user, assistant; got '" +
                           *role.value + "'");
    }
    // The chat templates take one system message, first (ChatTemplate::render refuses others).
    if (msg.role == "system" && i != 1) {
      return ApiError::invalid_request(p + ".role",
                                       "a system message is only supported as the first message");
    }
    element content_el;
    if (obj["content"].get(content_el) != simdjson::SUCCESS || is_null(content_el)) {
      return ApiError::invalid_request(p + ".content", "'" + p + ".content' is required");
    }
    auto content = read_content(content_el, p + ".content");
    if (content.error) return content.error;
    msg.content = std::move(*content.value);
    out.push_back(std::move(msg));
  }
  return std::nullopt;
}

std::optional<ApiError> parse_stop(const element& e, std::vector<std::string>& out, size_t max) {
  if (is_null(e)) return std::nullopt;
  if (e.type() == element_type::STRING) {
    out.emplace_back(e.get_string().value_unsafe());
  } else if (e.type() == element_type::ARRAY) {
    size_t i = 0;
    const simdjson::dom::array arr = e.get_array().value_unsafe();
    for (element s : arr) {
      std::string_view v;
      if (s.get_string().get(v) != simdjson::SUCCESS) {
        return wrong_type("stop[" + std::to_string(i) + "]", "a string", s);
      }
      out.emplace_back(v);
      ++i;
    }
  } else {
    return wrong_type("stop", "a string or an array of strings", e);
  }
  if (out.size() > max) {
    return ApiError::invalid_request("stop", "'stop' takes at most " + std::to_string(max) +
                                                 " strings, got " + std::to_string(out.size()));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].empty()) {
      return ApiError::invalid_request("stop", "'stop' strings must not be empty");
    }
  }
  return std::nullopt;
}

bool non_empty_container(const element& e) {
  if (e.type() == element_type::ARRAY) return e.get_array().value_unsafe().size() > 0;
  if (e.type() == element_type::OBJECT) return e.get_object().value_unsafe().size() > 0;
  return !is_null(e);
}

// The engine's own validation as a backstop; its messages start with the field name.
std::optional<ApiError> engine_validate(const GenerationOptions& options) {
  auto st = options.validate();
  if (st.ok()) return std::nullopt;
  const auto& msg = st.error().message();
  std::string param = msg.substr(0, msg.find_first_of(" :["));
  return ApiError::invalid_request(param, msg);
}

ApiResult<ApiRequest> parse_request(std::string_view body, const OpenAiApiOptions& options,
                                    ApiEndpoint endpoint) {
  thread_local simdjson::dom::parser parser;
  element root;
  if (auto err = parser.parse(body.data(), body.size()).get(root); err != simdjson::SUCCESS) {
    return ApiError::invalid_request(
        "", std::string("We could not parse the JSON body of your request: ") +
                simdjson::error_message(err));
  }
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return ApiError::invalid_request("", "the request body must be a JSON object, got " +
                                             type_name(root.type()));
  }
  if (auto err = refuse_duplicate_keys(obj, "")) return *err;
  const bool chat = endpoint == ApiEndpoint::kChatCompletions;
  ApiRequest req;
  req.endpoint = endpoint;
  SamplingParams& sp = req.options.sampling;
  bool have_model = false, have_input = false;
  std::optional<int64_t> max_tokens, max_completion_tokens;
  const element* stream_options = nullptr;
  element stream_options_el;

  for (auto field : obj) {
    const std::string key(field.key);
    const element& v = field.value;
    std::optional<ApiError> err;
    if (key == "model") {
      auto r = read_string(v, key);
      if (r.error) return *r.error;
      if (r.value && !r.value->empty()) {
        req.model = std::move(*r.value);
        have_model = true;
      }
    } else if (chat && key == "messages") {
      if ((err = parse_messages(v, req.messages))) return *err;
      have_input = true;
    } else if (!chat && key == "prompt") {
      if (v.type() == element_type::ARRAY) {
        auto arr = v.get_array().value_unsafe();
        if (arr.size() != 1 || arr.at(0).type() != element_type::STRING) {
          return ApiError::unsupported(
              "prompt", "'prompt' must be a single string (batched and token prompts are not supported)");
        }
        req.prompt = std::string(arr.at(0).get_string().value_unsafe());
      } else {
        auto r = read_string(v, key);
        if (r.error) return *r.error;
        if (!r.value) return ApiError::invalid_request("prompt", "'prompt' is required");
        req.prompt = std::move(*r.value);
      }
      if (req.prompt.empty()) return ApiError::invalid_request("prompt", "'prompt' must not be empty");
      have_input = true;
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      auto r = read_int(v, key);
      if (r.error) return *r.error;
      if (r.value && (*r.value < 1 || *r.value > options.max_tokens_cap)) {
        return ApiError::invalid_request(
            key, "'" + key + "' must be in [1, " + std::to_string(options.max_tokens_cap) +
                     "], got " + std::to_string(*r.value));
      }
      (key == "max_tokens" ? max_tokens : max_completion_tokens) = r.value;
    } else if (key == "temperature") {
      err = read_range(v, key, 0, 2, false, sp.temperature);
    } else if (key == "top_p") {
      err = read_range(v, key, 0, 1, true, sp.top_p);
    } else if (key == "min_p") {
      err = read_range(v, key, 0, 1, false, sp.min_p);
    } else if (key == "presence_penalty") {
      err = read_range(v, key, -2, 2, false, sp.presence_penalty);
    } else if (key == "frequency_penalty") {
      err = read_range(v, key, -2, 2, false, sp.frequency_penalty);
    } else if (key == "repetition_penalty") {
      err = read_range(v, key, 0, 1e6, true, sp.repetition_penalty);
    } else if (key == "top_k") {
      auto r = read_int(v, key);
      if (r.error) return *r.error;
      if (r.value) {
        // -1 is vLLM's "disabled"; 0 is ours.
        if (*r.value < -1 || *r.value > (1 << 30)) {
          return ApiError::invalid_request(key, "'top_k' must be >= 0 (or -1 to disable)");
        }
        sp.top_k = *r.value < 0 ? 0 : static_cast<int32_t>(*r.value);
      }
    } else if (key == "seed") {
      if (!is_null(v) && v.type() == element_type::UINT64) {
        sp.seed = v.get_uint64().value_unsafe();
      } else {
        auto r = read_int(v, key);
        if (r.error) return *r.error;
        if (r.value) sp.seed = static_cast<uint64_t>(*r.value);
      }
    } else if (key == "stop") {
      err = parse_stop(v, req.options.stop, options.max_stop_strings);
    } else if (key == "n") {
      auto r = read_int(v, key);
      if (r.error) return *r.error;
      if (r.value && *r.value != 1) {
        return ApiError::unsupported("n", "only n=1 is supported, got " + std::to_string(*r.value));
      }
    } else if (key == "stream") {
      auto r = read_bool(v, key);
      if (r.error) return *r.error;
      req.stream = r.value.value_or(false);
    } else if (key == "stream_options") {
      if (!is_null(v)) {
        if (v.type() != element_type::OBJECT) return wrong_type(key, "an object", v);
        if (auto dup = refuse_duplicate_keys(v.get_object().value_unsafe(), key)) return *dup;
        stream_options_el = v;
        stream_options = &stream_options_el;
      }
    } else if (key == "user") {
      auto r = read_string(v, key);
      if (r.error) return *r.error;
      req.user = r.value.value_or("");
    } else if (key == "ignore_eos") {
      auto r = read_bool(v, key);
      if (r.error) return *r.error;
      req.options.ignore_eos = r.value.value_or(false);
    } else if (key == "logprobs" || key == "top_logprobs") {
      // chat: logprobs is a boolean; completions: an integer count. Either way, not served.
      if (!is_null(v) && !(v.type() == element_type::BOOL && !v.get_bool().value_unsafe())) {
        return ApiError::unsupported(key, "'" + key + "' is not supported");
      }
    } else if (key == "tools" || key == "functions" || key == "logit_bias") {
      if (non_empty_container(v)) return ApiError::unsupported(key, "'" + key + "' is not supported");
    } else if (key == "response_format") {
      if (!is_null(v)) {
        std::string_view type;
        if (v.type() != element_type::OBJECT || v["type"].get_string().get(type) != simdjson::SUCCESS ||
            type != "text") {
          return ApiError::unsupported(key, "only response_format {\"type\": \"text\"} is supported");
        }
      }
    } else if (!chat && key == "echo") {
      auto r = read_bool(v, key);
      if (r.error) return *r.error;
      if (r.value.value_or(false)) return ApiError::unsupported(key, "'echo' is not supported");
    } else if (!chat && key == "suffix") {
      auto r = read_string(v, key);
      if (r.error) return *r.error;
      if (r.value && !r.value->empty()) return ApiError::unsupported(key, "'suffix' is not supported");
    } else if (!chat && key == "best_of") {
      auto r = read_int(v, key);
      if (r.error) return *r.error;
      if (r.value && *r.value != 1) return ApiError::unsupported(key, "only best_of=1 is supported");
    }
    if (err) return *err;
  }

  if (!have_model) {
    return ApiError::invalid_request("model", "you must provide a model parameter");
  }
  if (!have_input) {
    return chat ? ApiError::invalid_request("messages", "'messages' is required")
                : ApiError::invalid_request("prompt", "'prompt' is required");
  }
  if (stream_options != nullptr) {
    if (!req.stream) {
      return ApiError::invalid_request("stream_options",
                                       "'stream_options' is only allowed when 'stream' is true");
    }
    element iu;
    if (stream_options->get_object().value_unsafe()["include_usage"].get(iu) == simdjson::SUCCESS) {
      auto r = read_bool(iu, "stream_options.include_usage");
      if (r.error) return *r.error;
      req.include_usage = r.value.value_or(false);
    }
  }
  // max_completion_tokens is OpenAI's newer name; it wins when both are given.
  req.options.max_tokens =
      max_completion_tokens.value_or(max_tokens.value_or(options.default_max_tokens));
  if (auto err = engine_validate(req.options)) return *err;
  return req;
}

boost::json::object envelope(const ResponseContext& ctx, const char* object) {
  boost::json::object o;
  o["id"] = ctx.id;
  o["object"] = object;
  o["created"] = ctx.created;
  o["model"] = ctx.model;
  return o;
}

boost::json::object usage_json(const FinishInfo& info) {
  boost::json::object u;
  u["prompt_tokens"] = info.prompt_tokens;
  u["completion_tokens"] = info.completion_tokens;
  u["total_tokens"] = info.prompt_tokens + info.completion_tokens;
  return u;
}

bool is_chat(const ResponseContext& ctx) { return ctx.endpoint == ApiEndpoint::kChatCompletions; }

// One streamed chunk: a single choice with either a delta (chat) or text (completions).
std::string chunk(const ResponseContext& ctx, std::optional<std::string_view> role,
                  std::string_view text, const char* finish_reason) {
  boost::json::object o = envelope(ctx, is_chat(ctx) ? "chat.completion.chunk" : "text_completion");
  boost::json::object choice;
  choice["index"] = 0;
  if (is_chat(ctx)) {
    boost::json::object delta;
    if (role) delta["role"] = *role;
    if (role || !text.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason ? boost::json::value(finish_reason) : nullptr;
  o["choices"] = boost::json::array{std::move(choice)};
  if (ctx.include_usage) o["usage"] = nullptr;
  return boost::json::serialize(o);
}

}  // namespace

std::string request_model(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view model;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS ||
      root["model"].get_string().get(model) != simdjson::SUCCESS) {
    return {};
  }
  return std::string(model);
}

ApiResult<ApiRequest> parse_chat_completion_request(std::string_view body,
                                                    const OpenAiApiOptions& options) {
  return parse_request(body, options, ApiEndpoint::kChatCompletions);
}

ApiResult<ApiRequest> parse_completion_request(std::string_view body,
                                               const OpenAiApiOptions& options) {
  return parse_request(body, options, ApiEndpoint::kCompletions);
}

const char* openai_finish_reason(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

std::string completion_body(const ResponseContext& ctx, std::string_view text,
                            const FinishInfo& info) {
  boost::json::object o = envelope(ctx, is_chat(ctx) ? "chat.completion" : "text_completion");
  boost::json::object choice;
  choice["index"] = 0;
  if (is_chat(ctx)) {
    boost::json::object message;
    message["role"] = "assistant";
    message["content"] = text;
    choice["message"] = std::move(message);
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = openai_finish_reason(info.finish_reason);
  o["choices"] = boost::json::array{std::move(choice)};
  o["usage"] = usage_json(info);
  return boost::json::serialize(o);
}

std::string stream_role_chunk(const ResponseContext& ctx) {
  return chunk(ctx, "assistant", "", nullptr);
}

std::string stream_text_chunk(const ResponseContext& ctx, std::string_view piece) {
  return chunk(ctx, std::nullopt, piece, nullptr);
}

std::string stream_finish_chunk(const ResponseContext& ctx, const FinishInfo& info) {
  return chunk(ctx, std::nullopt, "", openai_finish_reason(info.finish_reason));
}

std::string stream_usage_chunk(const ResponseContext& ctx, const FinishInfo& info) {
  boost::json::object o = envelope(ctx, is_chat(ctx) ? "chat.completion.chunk" : "text_completion");
  o["choices"] = boost::json::array{};
  o["usage"] = usage_json(info);
  return boost::json::serialize(o);
}

std::string sse_event(std::string_view json) {
  std::string s;
  s.reserve(json.size() + 8);
  s.append("data: ").append(json).append("\n\n");
  return s;
}

std::string models_body(const std::vector<ModelInfo>& models) {
  boost::json::array data;
  for (const auto& m : models) {
    boost::json::object o;
    o["id"] = m.id;
    o["object"] = "model";
    o["created"] = m.created;
    o["owned_by"] = m.owned_by;
    data.push_back(std::move(o));
  }
  boost::json::object root;
  root["object"] = "list";
  root["data"] = std::move(data);
  return boost::json::serialize(root);
}

}  // namespace qgate

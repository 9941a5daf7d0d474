// OpenAI request parsing and validation (a matrix of malformed bodies, each naming its field) and
// the response/chunk serializers, checked by parsing their output back.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "gateway/api_errors.h"
#include "gateway/openai_api.h"

namespace qgate {
namespace {

constexpr const char* kChatPrefix = R"({"model":"m","messages":[{"role":"user","content":"hi"}])";

std::string chat(const std::string& extra) { return std::string(kChatPrefix) + extra + "}"; }

ApiRequest parse_chat_ok(const std::string& body, const OpenAiApiOptions& opts = {}) {
  auto r = parse_chat_completion_request(body, opts);
  EXPECT_TRUE(r.ok()) << body << " -> " << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(r).value() : ApiRequest{};
}

TEST(OpenAiParse, MinimalChatGetsDefaults) {
  OpenAiApiOptions opts;
  opts.default_max_tokens = 77;
  ApiRequest r = parse_chat_ok(chat(""), opts);
  EXPECT_EQ(r.endpoint, ApiEndpoint::kChatCompletions);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "hi");
  EXPECT_EQ(r.options.max_tokens, 77);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.options.sampling.seed.has_value());
  EXPECT_FLOAT_EQ(r.options.sampling.temperature, 1.0f);
}

TEST(OpenAiParse, FullChatRequest) {
  const std::string body = R"({
    "model": "smollm2",
    "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]},
      {"role": "assistant", "content": "ok", "name": "bot"},
      {"role": "user", "content": "again"}
    ],
    "max_tokens": 100, "max_completion_tokens": 50,
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
    "seed": 1234, "stop": ["\n\n", "END"], "n": 1, "stream": true,
    "stream_options": {"include_usage": true}, "user": "u-1", "ignore_eos": true,
    "logprobs": false, "tools": [], "response_format": {"type": "text"}, "metadata": {"x": 1}
  })";
  ApiRequest r = parse_chat_ok(body);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "two parts");
  EXPECT_EQ(r.messages[3].content, "again");
  EXPECT_EQ(r.options.max_tokens, 50);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(r.options.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.options.sampling.top_p, 0.9f);
  EXPECT_EQ(r.options.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.options.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.options.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.options.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.options.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r.options.sampling.seed, 1234u);
  EXPECT_EQ(r.options.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.options.ignore_eos);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.user, "u-1");
}

TEST(OpenAiParse, NullsMeanNotGivenAndSmallConveniences) {
  ApiRequest r = parse_chat_ok(chat(R"(,"temperature":null,"max_tokens":null,"stop":"x",
      "top_k":-1,"seed":null,"n":null,"stream":null,"user":null)"));
  EXPECT_FLOAT_EQ(r.options.sampling.temperature, 1.0f);
  EXPECT_EQ(r.options.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.options.sampling.top_k, 0);  // vLLM's -1 = disabled
  // "developer" is OpenAI's newer name for the system role.
  ApiRequest d = parse_chat_ok(
      R"({"model":"m","messages":[{"role":"developer","content":"s"},{"role":"user","content":"u"}]})");
  EXPECT_EQ(d.messages[0].role, "system");
  // Temperature 0 (greedy) and integer-valued numbers are fine.
  ApiRequest g = parse_chat_ok(chat(R"(,"temperature":0,"top_p":1)"));
  EXPECT_FLOAT_EQ(g.options.sampling.temperature, 0.0f);
}

TEST(OpenAiParse, CompletionRequest) {
  auto r = parse_completion_request(
      R"({"model":"m","prompt":"Once upon","max_tokens":8,"echo":false,"suffix":null,"best_of":1,"logprobs":null})",
      {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().endpoint, ApiEndpoint::kCompletions);
  EXPECT_EQ(r.value().prompt, "Once upon");
  EXPECT_EQ(r.value().options.max_tokens, 8);
  auto one = parse_completion_request(R"({"model":"m","prompt":["only one"]})", {});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one.value().prompt, "only one");
}

struct BadCase {
  const char* name;
  std::string body;
  std::string param;         // expected "param"
  std::string message_part;  // expected substring of the message
  bool completions = false;
  int64_t cap = 4096;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class OpenAiParseRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(OpenAiParseRejects, WithOpenAiError) {
  const BadCase& c = GetParam();
  OpenAiApiOptions opts;
  opts.max_tokens_cap = c.cap;
  auto r = c.completions ? parse_completion_request(c.body, opts)
                         : parse_chat_completion_request(c.body, opts);
  ASSERT_FALSE(r.ok()) << c.body;
  const ApiError& e = r.error();
  EXPECT_EQ(e.status, 400u);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, c.param) << e.message;
  EXPECT_NE(e.message.find(c.message_part), std::string::npos) << e.message;
}

const std::string kMsgs = R"("messages":[{"role":"user","content":"hi"}])";
std::string with_msgs(const std::string& fields) { return "{" + kMsgs + "," + fields + "}"; }
std::string with_model(const std::string& messages) {
  return R"({"model":"m","messages":)" + messages + "}";
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, OpenAiParseRejects,
    ::testing::Values(
        BadCase{"invalid_json", R"({"model":"m",)", "", "could not parse"},
        BadCase{"empty_body", "", "", "could not parse"},
        BadCase{"trailing_garbage", chat("") + "x", "", "could not parse"},
        BadCase{"not_an_object", R"(["model"])", "", "must be a JSON object"},
        BadCase{"invalid_utf8", std::string(R"({"model":"m)") + "\xff\xfe" + "\"}", "",
                "could not parse"},
        BadCase{"missing_model", "{" + kMsgs + "}", "model", "model parameter"},
        BadCase{"empty_model", with_msgs(R"("model":"")"), "model", "model parameter"},
        BadCase{"model_not_string", with_msgs(R"("model":7)"), "model", "must be a string"},
        BadCase{"missing_messages", R"({"model":"m"})", "messages", "required"},
        BadCase{"messages_not_array", with_model(R"("hi")"), "messages", "must be an array"},
        BadCase{"empty_messages", with_model("[]"), "messages", "at least one"},
        BadCase{"message_not_object", with_model(R"(["hi"])"), "messages[0]", "an object"},
        BadCase{"missing_role", with_model(R"([{"content":"x"}])"), "messages[0].role", "required"},
        BadCase{"unknown_role", with_model(R"([{"role":"wizard","content":"x"}])"),
                "messages[0].role", "wizard"},
        BadCase{"tool_role", with_model(R"([{"role":"tool","content":"x"}])"), "messages[0].role",
                "not supported"},
        BadCase{"role_not_string", with_model(R"([{"role":1,"content":"x"}])"), "messages[0].role",
                "must be a string"},
        BadCase{"late_system",
                with_model(R"([{"role":"user","content":"a"},{"role":"system","content":"b"}])"),
                "messages[1].role", "system message"},
        // The chat templates take one system message (found by fuzz_openai_request: the HTTP layer
        // accepted two, and the request failed only after a variant was picked).
        BadCase{
            "second_system",
            with_model(
                R"([{"role":"system","content":"a"},{"role":"developer","content":"b"},{"role":"user","content":"c"}])"),
            "messages[1].role", "only supported as the first message"},
        // Repeated names (found by fuzz_openai_request: two "messages" arrays were concatenated).
        BadCase{
            "duplicate_messages",
            R"({"model":"m","messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]})",
            "messages", "given more than once"},
        BadCase{"duplicate_model", with_msgs(R"("model":"a","model":"b")"), "model",
                "more than once"},
        BadCase{"duplicate_role", with_model(R"([{"role":"user","role":"system","content":"x"}])"),
                "messages[0].role", "more than once"},
        BadCase{
            "duplicate_part_text",
            with_model(R"([{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}])"),
            "messages[0].content[0].text", "more than once"},
        BadCase{
            "duplicate_stream_option",
            chat(R"(,"stream":true,"stream_options":{"include_usage":true,"include_usage":false})"),
            "stream_options.include_usage", "more than once"},
        BadCase{"missing_content", with_model(R"([{"role":"user"}])"), "messages[0].content",
                "required"},
        BadCase{"null_content", with_model(R"([{"role":"user","content":null}])"),
                "messages[0].content", "required"},
        BadCase{"content_number", with_model(R"([{"role":"user","content":5}])"),
                "messages[0].content", "must be a string or an array"},
        BadCase{"image_part",
                with_model(R"([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])"),
                "messages[0].content[0].type", "image_url"},
        BadCase{"part_without_text", with_model(R"([{"role":"user","content":[{"type":"text"}]}])"),
                "messages[0].content[0].text", "must be a string"},
        BadCase{"max_tokens_negative", chat(R"(,"max_tokens":-5)"), "max_tokens", "[1, 4096]"},
        BadCase{"max_tokens_zero", chat(R"(,"max_tokens":0)"), "max_tokens", "got 0"},
        BadCase{"max_tokens_huge", chat(R"(,"max_tokens":1000000)"), "max_tokens", "[1, 4096]"},
        BadCase{"max_tokens_over_cap", chat(R"(,"max_tokens":65)"), "max_tokens", "[1, 64]", false,
                64},
        BadCase{"max_tokens_u64", chat(R"(,"max_tokens":18446744073709551615)"), "max_tokens",
                "out of range"},
        BadCase{"max_tokens_float", chat(R"(,"max_tokens":10.5)"), "max_tokens", "an integer"},
        BadCase{"max_tokens_string", chat(R"(,"max_tokens":"10")"), "max_tokens", "an integer"},
        BadCase{"max_completion_tokens_negative", chat(R"(,"max_completion_tokens":-1)"),
                "max_completion_tokens", "[1, 4096]"},
        BadCase{"temperature_string", chat(R"(,"temperature":"hot")"), "temperature", "a number"},
        BadCase{"temperature_negative", chat(R"(,"temperature":-0.1)"), "temperature",
                "must be in"},
        BadCase{"temperature_high", chat(R"(,"temperature":2.5)"), "temperature", "must be in"},
        BadCase{"top_p_zero", chat(R"(,"top_p":0)"), "top_p", "must be in"},
        BadCase{"top_p_high", chat(R"(,"top_p":1.5)"), "top_p", "must be in"},
        BadCase{"min_p_high", chat(R"(,"min_p":2)"), "min_p", "must be in"},
        BadCase{"top_k_negative", chat(R"(,"top_k":-7)"), "top_k", ">= 0"},
        BadCase{"top_k_float", chat(R"(,"top_k":1.5)"), "top_k", "an integer"},
        BadCase{"presence_penalty_range", chat(R"(,"presence_penalty":3)"), "presence_penalty",
                "must be in"},
        BadCase{"frequency_penalty_range", chat(R"(,"frequency_penalty":-3)"), "frequency_penalty",
                "must be in"},
        BadCase{"repetition_penalty_zero", chat(R"(,"repetition_penalty":0)"), "repetition_penalty",
                "must be in"},
        BadCase{"seed_string", chat(R"(,"seed":"42")"), "seed", "an integer"},
        BadCase{"n_two", chat(R"(,"n":2)"), "n", "n=1"},
        BadCase{"n_string", chat(R"(,"n":"1")"), "n", "an integer"},
        BadCase{"stop_five", chat(R"(,"stop":["a","b","c","d","e"])"), "stop", "at most 4"},
        BadCase{"stop_number", chat(R"(,"stop":5)"), "stop", "a string or an array"},
        BadCase{"stop_array_number", chat(R"(,"stop":["a",5])"), "stop[1]", "a string"},
        BadCase{"stop_empty_string", chat(R"(,"stop":[""])"), "stop", "must not be empty"},
        BadCase{"stop_too_long", chat(R"(,"stop":[")" + std::string(300, 'x') + "\"]"), "stop",
                "bytes"},
        BadCase{"stream_string", chat(R"(,"stream":"yes")"), "stream", "a boolean"},
        BadCase{"stream_options_without_stream",
                chat(R"(,"stream_options":{"include_usage":true})"), "stream_options",
                "only allowed"},
        BadCase{"stream_options_not_object", chat(R"(,"stream":true,"stream_options":true)"),
                "stream_options", "an object"},
        BadCase{"include_usage_string",
                chat(R"(,"stream":true,"stream_options":{"include_usage":"y"})"),
                "stream_options.include_usage", "a boolean"},
        BadCase{"user_number", chat(R"(,"user":5)"), "user", "a string"},
        BadCase{"logprobs_true", chat(R"(,"logprobs":true)"), "logprobs", "not supported"},
        BadCase{"tools", chat(R"(,"tools":[{"type":"function"}])"), "tools", "not supported"},
        BadCase{"logit_bias", chat(R"(,"logit_bias":{"50256":-100})"), "logit_bias",
                "not supported"},
        BadCase{"json_mode", chat(R"(,"response_format":{"type":"json_object"})"),
                "response_format", "only response_format"},
        BadCase{"completion_missing_prompt", R"({"model":"m"})", "prompt", "required", true},
        BadCase{"completion_empty_prompt", R"({"model":"m","prompt":""})", "prompt", "empty", true},
        BadCase{"completion_prompt_batch", R"({"model":"m","prompt":["a","b"]})", "prompt",
                "single string", true},
        BadCase{"completion_prompt_tokens", R"({"model":"m","prompt":[1,2,3]})", "prompt",
                "single string", true},
        BadCase{"completion_prompt_number", R"({"model":"m","prompt":5})", "prompt", "a string",
                true},
        BadCase{"completion_echo", R"({"model":"m","prompt":"a","echo":true})", "echo",
                "not supported", true},
        BadCase{"completion_logprobs", R"({"model":"m","prompt":"a","logprobs":5})", "logprobs",
                "not supported", true},
        BadCase{"completion_suffix", R"({"model":"m","prompt":"a","suffix":"z"})", "suffix",
                "not supported", true},
        BadCase{"completion_best_of", R"({"model":"m","prompt":"a","best_of":3})", "best_of",
                "best_of=1", true},
        BadCase{"completion_n", R"({"model":"m","prompt":"a","n":4})", "n", "n=1", true}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(OpenAiParse, UnsupportedFeaturesCarryACode) {
  auto r = parse_chat_completion_request(chat(R"(,"n":3)"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unsupported_parameter");
}

// --- serialization ------------------------------------------------------------------------------

boost::json::object parse_json(const std::string& s) {
  boost::system::error_code ec;
  auto v = boost::json::parse(s, ec);
  EXPECT_FALSE(ec) << s;
  return v.is_object() ? v.as_object() : boost::json::object{};
}

ResponseContext chat_ctx(bool include_usage = false) {
  return {ApiEndpoint::kChatCompletions, "chatcmpl-1", 1700000000, "smollm2", include_usage};
}

TEST(OpenAiSerialize, ChatCompletionBody) {
  FinishInfo info{FinishReason::kLength, 12, 5};
  auto o = parse_json(completion_body(chat_ctx(), "Hi \"there\"\n", info));
  EXPECT_EQ(o["id"].as_string(), "chatcmpl-1");
  EXPECT_EQ(o["object"].as_string(), "chat.completion");
  EXPECT_EQ(o["created"].as_int64(), 1700000000);
  EXPECT_EQ(o["model"].as_string(), "smollm2");
  auto& choice = o["choices"].as_array().at(0).as_object();
  EXPECT_EQ(choice["index"].as_int64(), 0);
  EXPECT_EQ(choice["message"].as_object()["role"].as_string(), "assistant");
  EXPECT_EQ(choice["message"].as_object()["content"].as_string(), "Hi \"there\"\n");
  EXPECT_EQ(choice["finish_reason"].as_string(), "length");
  auto& usage = o["usage"].as_object();
  EXPECT_EQ(usage["prompt_tokens"].as_int64(), 12);
  EXPECT_EQ(usage["completion_tokens"].as_int64(), 5);
  EXPECT_EQ(usage["total_tokens"].as_int64(), 17);
}

TEST(OpenAiSerialize, TextCompletionBody) {
  ResponseContext ctx{ApiEndpoint::kCompletions, "cmpl-1", 1, "m", false};
  auto o = parse_json(completion_body(ctx, "abc", {FinishReason::kStop, 1, 2}));
  EXPECT_EQ(o["object"].as_string(), "text_completion");
  auto& choice = o["choices"].as_array().at(0).as_object();
  EXPECT_EQ(choice["text"].as_string(), "abc");
  EXPECT_EQ(choice["finish_reason"].as_string(), "stop");
  EXPECT_FALSE(choice.contains("message"));
}

TEST(OpenAiSerialize, StreamChunks) {
  auto role = parse_json(stream_role_chunk(chat_ctx()));
  EXPECT_EQ(role["object"].as_string(), "chat.completion.chunk");
  auto& rc = role["choices"].as_array().at(0).as_object();
  EXPECT_EQ(rc["delta"].as_object()["role"].as_string(), "assistant");
  EXPECT_TRUE(rc["finish_reason"].is_null());
  EXPECT_FALSE(role.contains("usage"));

  auto text = parse_json(stream_text_chunk(chat_ctx(true), "tok"));
  auto& tc = text["choices"].as_array().at(0).as_object();
  EXPECT_EQ(tc["delta"].as_object()["content"].as_string(), "tok");
  EXPECT_FALSE(tc["delta"].as_object().contains("role"));
  EXPECT_TRUE(text["usage"].is_null());  // include_usage: null on every chunk but the last

  auto fin = parse_json(stream_finish_chunk(chat_ctx(), {FinishReason::kStop, 3, 4}));
  auto& fc = fin["choices"].as_array().at(0).as_object();
  EXPECT_EQ(fc["finish_reason"].as_string(), "stop");
  EXPECT_TRUE(fc["delta"].as_object().empty());

  auto usage = parse_json(stream_usage_chunk(chat_ctx(true), {FinishReason::kStop, 3, 4}));
  EXPECT_TRUE(usage["choices"].as_array().empty());
  EXPECT_EQ(usage["usage"].as_object()["total_tokens"].as_int64(), 7);

  EXPECT_EQ(sse_event(R"({"a":"b\nc"})"), "data: {\"a\":\"b\\nc\"}\n\n");
  // Text with newlines stays on one SSE line.
  EXPECT_EQ(stream_text_chunk(chat_ctx(), "a\nb").find('\n'), std::string::npos);
}

TEST(OpenAiSerialize, ModelsList) {
  auto o = parse_json(models_body({{"smollm2", "qgate", 5}, {"gptq", "qgate", 6}}));
  EXPECT_EQ(o["object"].as_string(), "list");
  auto& data = o["data"].as_array();
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[1].as_object()["id"].as_string(), "gptq");
  EXPECT_EQ(data[1].as_object()["object"].as_string(), "model");
}

TEST(ApiErrors, BodiesAndStatuses) {
  auto o = parse_json(api_error_body(ApiError::invalid_request("max_tokens", "too big")));
  auto& e = o["error"].as_object();
  EXPECT_EQ(e["message"].as_string(), "too big");
  EXPECT_EQ(e["type"].as_string(), "invalid_request_error");
  EXPECT_EQ(e["param"].as_string(), "max_tokens");
  EXPECT_TRUE(e["code"].is_null());

  auto over = api_error_response(ApiError::overloaded("busy", 3));
  EXPECT_EQ(over.status, 429u);
  ASSERT_EQ(over.headers.size(), 1u);
  EXPECT_EQ(over.headers[0], (std::pair<std::string, std::string>{"Retry-After", "3"}));
  EXPECT_EQ(ApiError::unavailable("no variant").status, 503u);
  EXPECT_EQ(ApiError::unauthorized("no").status, 401u);
  EXPECT_EQ(ApiError::model_not_found("x").status, 404u);
  EXPECT_EQ(ApiError::body_too_large(10).status, 413u);
  EXPECT_EQ(ApiError::from_error(make_error(ErrorCode::kResourceExhausted, "overloaded")).status,
            429u);
  EXPECT_EQ(ApiError::from_error(make_error(ErrorCode::kOutOfRange, "too long")).status, 400u);
  EXPECT_EQ(ApiError::from_error(make_error(ErrorCode::kInternal, "boom")).status, 500u);
}

}  // namespace
}  // namespace qgate

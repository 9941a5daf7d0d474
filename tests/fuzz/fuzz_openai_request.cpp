// libFuzzer target for the request bodies the API listener parses: /v1/chat/completions,
// /v1/completions and /v1/feedback, each input fed to all three. Properties, beyond "no crash, no
// leak, no undefined behaviour":
//  - a refusal is a 400 whose OpenAI error body is valid JSON;
//  - an accepted request is one the engine accepts too: its options pass the engine's validation,
//    max_tokens is within [1, cap], at most max_stop_strings stop strings, and a chat request's
//    messages render with both chat template families (so nothing the HTTP layer lets through can
//    fail later as a 500);
//  - the response writers turn the request's own strings into valid JSON that gives them back.
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/chat_template.h"
#include "gateway/api_errors.h"
#include "gateway/feedback_api.h"
#include "gateway/openai_api.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

boost::json::value parse_json(const std::string& text, const char* what) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  FUZZ_CHECK(!ec, "%s is not valid JSON (%s): %s", what, ec.message().c_str(), text.c_str());
  return v;
}

void check_refusal(const qgate::ApiError& error) {
  FUZZ_CHECK(error.status == 400, "a request body was refused with %u: %s", error.status,
             error.message.c_str());
  const boost::json::value body = parse_json(qgate::api_error_body(error), "an error body");
  FUZZ_CHECK(body.at("error").at("message").as_string() == error.message,
             "the error body lost the message");
}

void check_accepted(const qgate::ApiRequest& req, const qgate::OpenAiApiOptions& options) {
  FUZZ_CHECK(!req.model.empty(), "accepted without a model");
  FUZZ_CHECK(req.options.validate().ok(), "accepted options the engine refuses: %s",
             req.options.validate().error().message().c_str());
  FUZZ_CHECK(req.options.max_tokens >= 1 && req.options.max_tokens <= options.max_tokens_cap,
             "max_tokens %lld outside [1, cap]", static_cast<long long>(req.options.max_tokens));
  FUZZ_CHECK(req.options.stop.size() <= options.max_stop_strings, "%zu stop strings",
             req.options.stop.size());
  if (req.endpoint == qgate::ApiEndpoint::kChatCompletions) {
    FUZZ_CHECK(!req.messages.empty(), "a chat request without messages");
    for (const qgate::ChatTemplate& t :
         {qgate::ChatTemplate::chatml("You are a helpful assistant."),
          qgate::ChatTemplate::llama3()}) {
      auto rendered = t.render(req.messages);
      FUZZ_CHECK(rendered.ok(), "accepted messages the chat template refuses: %s",
                 rendered.error().message().c_str());
    }
  } else {
    FUZZ_CHECK(!req.prompt.empty(), "a completion request without a prompt");
  }

  // The writers: the request's strings go out as valid JSON and come back unchanged.
  const std::string& text = req.endpoint == qgate::ApiEndpoint::kChatCompletions
                                ? req.messages.back().content
                                : req.prompt;
  qgate::ResponseContext ctx;
  ctx.endpoint = req.endpoint;
  ctx.id = "id-1";
  ctx.model = req.model;
  ctx.include_usage = req.include_usage;
  const boost::json::value body = parse_json(qgate::completion_body(ctx, text, {}), "a body");
  FUZZ_CHECK(body.at("model").as_string() == req.model, "the model did not round-trip");
  const boost::json::value& choice = body.at("choices").at(0);
  const boost::json::value& out = req.endpoint == qgate::ApiEndpoint::kChatCompletions
                                      ? choice.at("message").at("content")
                                      : choice.at("text");
  FUZZ_CHECK(out.as_string() == text, "the text did not round-trip");
  parse_json(qgate::stream_text_chunk(ctx, text), "a stream chunk");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  qgate::OpenAiApiOptions options;
  options.max_tokens_cap = 1024;

  (void)qgate::request_model(body);
  for (auto parse : {&qgate::parse_chat_completion_request, &qgate::parse_completion_request}) {
    auto r = parse(body, options);
    if (r.ok()) {
      check_accepted(r.value(), options);
    } else {
      check_refusal(r.error());
    }
  }

  auto feedback = qgate::parse_feedback_request(body);
  if (feedback.ok()) {
    FUZZ_CHECK(!feedback.value().id.empty(), "feedback without an id");
    const double s = feedback.value().score;
    FUZZ_CHECK(std::isfinite(s) && s >= -1 && s <= 1, "feedback score %g", s);
  } else {
    check_refusal(feedback.error());
  }
  return 0;
}

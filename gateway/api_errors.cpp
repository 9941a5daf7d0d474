#include "gateway/api_errors.h"

#include <boost/json/serialize.hpp>

namespace qgate {

namespace {

ApiError make(unsigned status, std::string type, std::string message, std::string param,
              std::string code) {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

}  // namespace

ApiError ApiError::invalid_request(std::string param, std::string message) {
  return make(400, "invalid_request_error", std::move(message), std::move(param), "");
}

ApiError ApiError::unsupported(std::string param, std::string message) {
  return make(400, "invalid_request_error", std::move(message), std::move(param),
              "unsupported_parameter");
}

ApiError ApiError::unauthorized(std::string message) {
  return make(401, "invalid_request_error", std::move(message), "", "invalid_api_key");
}

ApiError ApiError::model_not_found(std::string_view model) {
  return make(404, "invalid_request_error",
              "The model '" + std::string(model) + "' does not exist", "model", "model_not_found");
}

ApiError ApiError::not_found(std::string_view path) {
  return make(404, "invalid_request_error", "Unknown path " + std::string(path), "", "not_found");
}

ApiError ApiError::method_not_allowed(std::string_view method, std::string_view path) {
  return make(405, "invalid_request_error",
              "Method " + std::string(method) + " is not allowed on " + std::string(path), "",
              "method_not_allowed");
}

ApiError ApiError::body_too_large(size_t limit_bytes) {
  return make(413, "invalid_request_error",
              "The request body exceeds the limit of " + std::to_string(limit_bytes) + " bytes",
              "", "request_too_large");
}

ApiError ApiError::headers_too_large(size_t limit_bytes) {
  return make(431, "invalid_request_error",
              "The request headers exceed the limit of " + std::to_string(limit_bytes) + " bytes",
              "", "headers_too_large");
}

ApiError ApiError::overloaded(std::string message, int retry_after_seconds) {
  ApiError e = make(429, "rate_limit_error", std::move(message), "", "overloaded");
  e.retry_after_seconds = retry_after_seconds;
  return e;
}

ApiError ApiError::unavailable(std::string message, int retry_after_seconds) {
  ApiError e = make(503, "service_unavailable", std::move(message), "", "no_healthy_variant");
  e.retry_after_seconds = retry_after_seconds;
  return e;
}

ApiError ApiError::internal(std::string message) {
  return make(500, "internal_error", std::move(message), "", "internal_error");
}

ApiError ApiError::timeout(std::string message) {
  return make(504, "timeout_error", std::move(message), "", "request_timeout");
}

ApiError ApiError::from_error(const Error& error, std::string param) {
  switch (error.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kOutOfRange:
    case ErrorCode::kInvalidFormat:
      return invalid_request(std::move(param), error.message());
    case ErrorCode::kUnsupported:
      return unsupported(std::move(param), error.message());
    case ErrorCode::kNotFound:
      return make(404, "invalid_request_error", error.message(), std::move(param), "not_found");
    case ErrorCode::kResourceExhausted:
      return overloaded(error.message());
    case ErrorCode::kCancelled:
    case ErrorCode::kInternal:
    case ErrorCode::kIo:
      break;
  }
  return internal(error.message());
}

boost::json::object api_error_json(const ApiError& error) {
  boost::json::object inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param.empty() ? boost::json::value(nullptr)
                                       : boost::json::value(error.param);
  inner["code"] = error.code.empty() ? boost::json::value(nullptr)
                                     : boost::json::value(error.code);
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return outer;
}

std::string api_error_body(const ApiError& error) {
  return boost::json::serialize(api_error_json(error));
}

HttpResponse api_error_response(const ApiError& error) {
  HttpResponse r;
  r.status = error.status;
  r.body = api_error_body(error);
  if (error.retry_after_seconds > 0) {
    r.headers.emplace_back("Retry-After", std::to_string(error.retry_after_seconds));
  }
  return r;
}

}  // namespace qgate

// OpenAI-style API errors: one value type for every failure the HTTP front door reports, and its
// wire form `{"error":{"message":...,"type":...,"param":...,"code":...}}`.
//
// Status policy: 400 malformed or unsupported input (param names the field), 401 bad or missing
// admin token, 404 unknown model or path, 405 wrong method, 413 body too large, 431 headers too
// large, 429 overloaded (with Retry-After), 503 no healthy variant (with Retry-After), 500 a bug or
// an engine failure. Engine errors (kernels/status.h) map through from_error().
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <boost/json/object.hpp>

#include "gateway/http_types.h"
#include "kernels/status.h"

namespace qgate {

struct ApiError {
  unsigned status = 500;
  std::string type = "internal_error";
  std::string message;
  std::string param;            // request field at fault; empty -> null
  std::string code;             // machine-readable reason; empty -> null
  int retry_after_seconds = 0;  // > 0 adds a Retry-After header

  static ApiError invalid_request(std::string param, std::string message);
  static ApiError unsupported(std::string param, std::string message);
  static ApiError unauthorized(std::string message);
  static ApiError model_not_found(std::string_view model);
  static ApiError not_found(std::string_view path);
  static ApiError method_not_allowed(std::string_view method, std::string_view path);
  static ApiError body_too_large(size_t limit_bytes);
  static ApiError headers_too_large(size_t limit_bytes);
  static ApiError overloaded(std::string message, int retry_after_seconds = 1);
  static ApiError unavailable(std::string message, int retry_after_seconds = 1);
  static ApiError internal(std::string message);
  // 504: the request ran past the gateway's whole-request deadline (http.request_timeout).
  static ApiError timeout(std::string message);
  // InvalidArgument/OutOfRange/InvalidFormat/Unsupported -> 400, NotFound -> 404,
  // ResourceExhausted -> 429, everything else -> 500.
  static ApiError from_error(const Error& error, std::string param = {});
};

boost::json::object api_error_json(const ApiError& error);
std::string api_error_body(const ApiError& error);  // serialized api_error_json
HttpResponse api_error_response(const ApiError& error);

// A value or the ApiError explaining why there is none (Result<T> with an HTTP-shaped error).
template <typename T>
class [[nodiscard]] ApiResult {
 public:
  ApiResult(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  ApiResult(ApiError error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit
  bool ok() const { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const ApiError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, ApiError> v_;
};

}  // namespace qgate

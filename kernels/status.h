// Error handling shared by every layer of qgate.
//
// Policy (see docs/ERRORS.md): anything that comes from outside the process — a file, a request,
// a config — is checked and reported through Result<T>/Status, never by exception or crash.
// Broken internal invariants are programming errors and use QGATE_CHECK, which aborts loudly.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace qgate {

enum class ErrorCode {
  kInvalidArgument,   // caller passed something malformed
  kNotFound,          // file, tensor, key or token that does not exist
  kInvalidFormat,     // a file or payload that does not follow its format
  kUnsupported,       // well-formed but not something qgate implements
  kOutOfRange,        // sizes or offsets beyond what the data or limits allow
  kResourceExhausted, // queue full, memory budget exceeded
  kCancelled,
  kInternal,
  kIo,
};

const char* error_code_name(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_format: gguf: tensor 'x' ends past the end of the file"
  std::string to_string() const;

 private:
  ErrorCode code_;
  std::string message_;
};

// Result<T> holds either a value or an Error (std::expected is C++23; this is its small subset).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Status is a Result with no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  static Status Ok() { return {}; }
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

inline Error make_error(ErrorCode code, std::string message) { return {code, std::move(message)}; }

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const char* msg);

}  // namespace qgate

// Invariant check for conditions the program itself guarantees. Never use it on input.
#define QGATE_CHECK(cond, msg)                                                 \
  do {                                                                         \
    if (!(cond)) ::qgate::check_failed(#cond, __FILE__, __LINE__, (msg));      \
  } while (0)

// Propagate an error from a Result/Status-returning expression.
#define QGATE_TRY_STATUS(expr)                 \
  do {                                         \
    auto _qgate_status = (expr);               \
    if (!_qgate_status.ok()) return _qgate_status.error(); \
  } while (0)

#define QGATE_CONCAT_INNER(a, b) a##b
#define QGATE_CONCAT(a, b) QGATE_CONCAT_INNER(a, b)
#define QGATE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.error();                \
  lhs = std::move(tmp).value()
#define QGATE_ASSIGN_OR_RETURN(lhs, expr) \
  QGATE_ASSIGN_OR_RETURN_IMPL(QGATE_CONCAT(_qgate_result_, __LINE__), lhs, expr)

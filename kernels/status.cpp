#include "kernels/status.h"

namespace qgate {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kInvalidFormat: return "invalid_format";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kOutOfRange: return "out_of_range";
    case ErrorCode::kResourceExhausted: return "resource_exhausted";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kIo: return "io";
  }
  return "unknown";
}

std::string Error::to_string() const { return std::string(error_code_name(code_)) + ": " + message_; }

void check_failed(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "qgate: invariant violated at %s:%d: %s (%s)\n", file, line, expr, msg);
  std::abort();
}

}  // namespace qgate

#include "core/error.h"

#include <cstring>

namespace ephemera {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kAlreadyExists:
      return "already_exists";
    case ErrorCode::kFailedPrecondition:
      return "failed_precondition";
    case ErrorCode::kResourceExhausted:
      return "resource_exhausted";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kPermissionDenied:
      return "permission_denied";
    case ErrorCode::kUnauthenticated:
      return "unauthenticated";
    case ErrorCode::kNoSpace:
      return "no_space";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "unknown";
}

void FailErrno(std::string_view what, int err, ErrorCode code) {
  throw Error(code, fmt::format("{}: {}", what, std::strerror(err)));
}

}  // namespace ephemera

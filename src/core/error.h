// Errors: one exception type for the whole project, carrying a code (which
// front doors map to HTTP statuses) and a message that names what was wrong.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace ephemera {

enum class ErrorCode {
  kInvalidArgument,     // the caller's input is wrong
  kNotFound,            // a named thing does not exist
  kAlreadyExists,       // a named thing exists and may not be replaced
  kFailedPrecondition,  // the system is not in a state that allows this
  kResourceExhausted,   // a limit or pool is used up
  kUnavailable,         // a dependency (program, device, guest) is not there
  kTimeout,             // a bounded wait ran out
  kPermissionDenied,    // the caller may not do this
  kUnauthenticated,     // the caller did not prove who it is
  kNoSpace,             // the host's disk is full (or below its free-space floor)
  kInternal,            // a bug or an unexpected host failure
};

std::string_view ErrorCodeName(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message)
      : std::runtime_error(std::move(message)), code_(code) {}

  ErrorCode code() const { return code_; }

  // Returns a copy whose message is prefixed with `context: `.
  Error WithContext(std::string_view context) const {
    return Error(code_, fmt::format("{}: {}", context, what()));
  }

 private:
  ErrorCode code_;
};

template <typename... Args>
[[noreturn]] void Fail(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}

// Throws kInternal (or `code`) with `what: strerror(errno)`.
[[noreturn]] void FailErrno(std::string_view what, int err, ErrorCode code = ErrorCode::kInternal);

}  // namespace ephemera

// The agent's errors: every failure is answered to the host as
// "<what>: <cause>", where `what` names the request field or the step.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace ephemera::agent {

class AgentError : public std::runtime_error {
 public:
  AgentError(std::string_view what, std::string_view cause)
      : std::runtime_error(std::string(what) + ": " + std::string(cause)) {}
};

// A request field that fails its check. Thrown before anything changes,
// so the request may be sent again corrected.
class FieldError : public AgentError {
 public:
  using AgentError::AgentError;
};

// A path the request names that the guest does not have.
class NotFoundError : public AgentError {
 public:
  using AgentError::AgentError;
};

// "cannot <doing> <path>: <strerror(err)>".
std::string ErrnoText(std::string_view doing, std::string_view path, int err);

}  // namespace ephemera::agent

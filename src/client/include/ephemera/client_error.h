// The one error libephemera-client throws (and the `ephemera` command
// reports): the daemon's message and the HTTP status it came with.
#pragma once

#include <stdexcept>
#include <string>

namespace ephemera::client {

class Error : public std::runtime_error {
 public:
  Error(unsigned status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  unsigned status() const { return status_; }  // 0 when the daemon could not be reached

 private:
  unsigned status_;
};

}  // namespace ephemera::client

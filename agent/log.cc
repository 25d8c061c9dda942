#include "agent/log.h"

#include <unistd.h>

#include <string>

namespace ephemera::agent {

namespace {
int log_fd = STDERR_FILENO;
}  // namespace

void SetLogFd(int fd) { log_fd = fd; }

void LogLine(std::string_view line) {
  // One write per line, so that lines of other writers do not cut into it.
  std::string text(line);
  text += '\n';
  [[maybe_unused]] ssize_t ignored = ::write(log_fd, text.data(), text.size());
}

void LogError(std::string_view message) { LogLine("ephemera-agent: " + std::string(message)); }

}  // namespace ephemera::agent

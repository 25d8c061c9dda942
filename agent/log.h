// The agent's console lines: errors only (the guest's console is the
// host's serial log), and the one readiness marker.
#pragma once

#include <string_view>

namespace ephemera::agent {

// Where lines go: /dev/console in the guest, stderr until it is set.
void SetLogFd(int fd);
// "ephemera-agent: <message>".
void LogError(std::string_view message);
// A line as is (the EPHEMERA_AGENT_READY marker).
void LogLine(std::string_view line);

}  // namespace ephemera::agent

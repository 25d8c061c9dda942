// The daemon's end of a guest agent's channel (docs/guest-agent.md): one
// JSON request per line, one answer per line, in order.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/unique_fd.h"

namespace ephemera {

// The newest agent protocol this daemon speaks (docs/guest-agent.md).
inline constexpr unsigned kAgentProtocol = 3;

class AgentClient {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects to the socket QEMU listens on for the agent's port, retrying
  // while QEMU sets it up. kUnavailable past `deadline`.
  static AgentClient Connect(const std::filesystem::path& socket, Clock::time_point deadline);

  // Proves the daemon to the agent with the token handed to the guest
  // before boot. The agent answers once it runs: this waits for the boot.
  // Returns the agent's protocol version (1 to kAgentProtocol).
  unsigned Hello(const std::string& token, Clock::time_point deadline);

  // Sends `request` (an "op" and its fields; the id is added) and returns
  // the agent's answer. kTimeout past `deadline`; kFailedPrecondition with
  // the agent's own words when it refuses; kUnavailable when the channel
  // closes; kInternal for an answer that is not the protocol's.
  nlohmann::json Call(nlohmann::json request, Clock::time_point deadline);

  // The connection, for a lasting AgentLink; `pending` gets what was read
  // past the last answer.
  UniqueFd Release(std::string& pending) && {
    pending = std::move(buffer_);
    return std::move(fd_);
  }

  // The largest line either side sends.
  static constexpr std::size_t kMaxLine = 1 << 20;

 private:
  explicit AgentClient(UniqueFd fd, std::string where)
      : fd_(std::move(fd)), where_(std::move(where)) {}
  void Send(const std::string& line, Clock::time_point deadline);
  std::string ReadLine(Clock::time_point deadline);

  UniqueFd fd_;
  std::string where_;
  std::string buffer_;
  std::uint64_t next_id_ = 1;
};

}  // namespace ephemera

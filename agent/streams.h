// The agent's streams (docs/guest-agent.md, protocol 3): processes the
// host runs (exec) and files it reads or writes, each with its output
// flow-controlled by the host's acks and its input queued until written.
// They live as long as the host's connection: when it goes, processes are
// killed and half-written files removed.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/files.h"

namespace ephemera::agent {

class Streams {
 public:
  using Clock = std::chrono::steady_clock;
  // Output not yet acked by the host, per stream, beyond which the agent
  // stops reading the process (or file) until acks come.
  static constexpr uint64_t kWindow = 1 << 20;
  // Input waiting to be written, per stream: more is refused.
  static constexpr size_t kMaxPendingInput = 4 << 20;
  // Raw bytes per output event (base64 keeps a line well under kMaxLine).
  static constexpr size_t kChunk = 128 * 1024;
  // How long after its process exits a stream waits for output from
  // children that kept its pipes.
  static constexpr std::chrono::milliseconds kDrainGrace{200};

  explicit Streams(Root root);
  ~Streams();
  Streams(const Streams&) = delete;
  Streams& operator=(const Streams&) = delete;

  static bool Handles(const std::string& op);
  // The answer's fields to a stream operation (request `id` names a new
  // stream). FieldError / AgentError when refused.
  nlohmann::ordered_json Handle(uint64_t id, const std::string& op, const nlohmann::json& request);

  // The event loop's part: descriptors to poll, then their results (the
  // same entries, from `first` on), then Tick for exits, timeouts and
  // file reads. Events to send pile up in TakeEvents.
  void AddPollFds(std::vector<pollfd>& fds);
  void OnPolled(const std::vector<pollfd>& fds, size_t first);
  void Tick();
  // How long the loop may sleep (-1: until a descriptor or signal).
  int PollTimeoutMs() const;
  std::deque<std::string> TakeEvents();

  // The host is gone: kills every process group, removes unfinished files.
  void CloseAll();
  size_t size() const { return streams_.size(); }

 private:
  struct Stream;
  Stream& FindStream(const nlohmann::json& request);
  void Emit(nlohmann::ordered_json event);
  void EmitOutput(uint64_t id, const char* name, std::string_view bytes);
  void ReadOutput(Stream& stream, int& fd, const char* name);
  void WriteInput(Stream& stream);
  void FinishWrite(Stream& stream);
  void End(Stream& stream, nlohmann::ordered_json end);
  nlohmann::ordered_json Stat(const nlohmann::json& request);

  Root root_;
  std::map<uint64_t, std::unique_ptr<Stream>> streams_;
  std::vector<std::pair<uint64_t, int>> polled_;  // stream id, which descriptor
  std::deque<std::string> events_;
  std::vector<pid_t> orphans_;  // killed with their stream, not yet reaped
};

}  // namespace ephemera::agent

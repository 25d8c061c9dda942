// A lasting connection to one sandbox's guest agent (protocol 3,
// docs/guest-agent.md "Streams"): requests from many threads at once, and
// streams (a process, a file read or written) whose output comes as events
// between the answers. A reader thread sorts what the agent sends.
//
// Flow control both ways: the agent sends at most its window of output per
// stream before the daemon acks it (Next acks what the caller took before),
// and Write waits while more than kInputWindow of input is unwritten, so a
// stream holds a bounded amount of memory on either side.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/unique_fd.h"
#include "guest/guest_stream.h"

namespace ephemera {

class AgentLink;

class AgentStream : public GuestStream {
 public:
  static constexpr std::uint64_t kInputWindow = 1 << 20;
  static constexpr std::size_t kInputPiece = 192 * 1024;
  // The agent's output window plus a chunk: more unacked output is a guest
  // that ignores flow control, and its channel is closed.
  static constexpr std::uint64_t kOutputLimit = (1 << 20) + (512 << 10);

  ~AgentStream() override;
  std::uint64_t id() const { return id_; }
  // The answer that started it (a process's "pid", a file's "size", ...).
  const nlohmann::json& started() const override { return started_; }
  // The next event, acking the output the previous call returned. After
  // the end, the end again. kTimeout past `deadline`.
  GuestEvent Next(Clock::time_point deadline) override;
  // Input for a process's stdin or a file being written. kTimeout when the
  // agent takes none of it before `deadline`; kFailedPrecondition once the
  // stream ended.
  void Write(std::string_view data, Clock::time_point deadline) override;
  void CloseInput() override;
  void Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point deadline) override;
  // To the process's group; nothing once it ended.
  void Signal(int signal) override;
  bool ended() override;

 private:
  friend class AgentLink;
  AgentStream(std::shared_ptr<AgentLink> link, std::uint64_t id)
      : link_(std::move(link)), id_(id) {}

  std::shared_ptr<AgentLink> link_;
  std::uint64_t id_;
  nlohmann::json started_;
  // Guarded by the link's mutex.
  std::deque<GuestEvent> events_;
  std::optional<GuestEvent> end_;
  std::uint64_t sent_ = 0;     // input bytes sent
  std::uint64_t written_ = 0;  // ... and written by the agent
  std::uint64_t to_ack_ = 0;   // output handed out, not acked yet
  std::uint64_t queued_ = 0;   // output in events_
};

class AgentLink : public std::enable_shared_from_this<AgentLink> {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects and says hello; kFailedPrecondition when the agent speaks a
  // protocol without streams (older than 3), kUnavailable / kTimeout as
  // AgentClient's.
  static std::shared_ptr<AgentLink> Open(const std::filesystem::path& socket,
                                         const std::string& token, Clock::time_point deadline);
  ~AgentLink();
  AgentLink(const AgentLink&) = delete;
  AgentLink& operator=(const AgentLink&) = delete;

  // One request and its answer, as AgentClient::Call: kFailedPrecondition
  // (kInvalidArgument for a field the agent refused, kNotFound for a path
  // it does not have) with the agent's words.
  nlohmann::json Call(nlohmann::json request, Clock::time_point deadline);
  // Starts a stream ("exec", "read", "write").
  std::shared_ptr<AgentStream> Start(nlohmann::json request, Clock::time_point deadline);
  // Ends the connection: every stream ends with an error, the agent kills
  // their processes. Idempotent.
  void Close();
  bool closed();
  // Streams not ended yet (processes running, transfers under way).
  std::size_t OpenStreams();

 private:
  friend class AgentStream;
  AgentLink(UniqueFd fd, std::string where);
  void ReadLoop();
  void Dispatch(const std::string& line);
  // A new request id; `awaited`: its answer is kept for Await.
  std::uint64_t Reserve(bool awaited);
  // kUnavailable when closed (or the send fails, which closes).
  void SendWithId(std::uint64_t id, nlohmann::json request);
  void Send(nlohmann::json request);  // an answer nobody waits for
  nlohmann::json Await(std::uint64_t id, const std::string& op, Clock::time_point deadline);

  UniqueFd fd_;
  std::string where_;
  std::mutex send_mutex_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool closed_ = false;
  std::uint64_t next_id_ = 1;
  std::set<std::uint64_t> awaited_;
  std::map<std::uint64_t, nlohmann::json> answers_;
  std::map<std::uint64_t, AgentStream*> streams_;
  std::thread reader_;
};

}  // namespace ephemera

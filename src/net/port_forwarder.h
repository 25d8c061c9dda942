// The host-port forwarder: one TCP listener per sandbox on a port from a
// range, each accepted connection relayed to the guest's sshd through a
// buffer per direction that grows with the traffic (large copies beat
// splice here; see port_forwarder.cc). One epoll thread serves every
// sandbox.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/ipv4.h"
#include "core/sandbox_id.h"
#include "core/unique_fd.h"

namespace ephemera {

struct PortRange {
  std::uint16_t first = 10000;
  std::uint16_t last = 15000;
};

struct ForwarderOptions {
  std::string listen_address = "0.0.0.0";
  PortRange ports;
  // Open at once to one sandbox, over all its forwarded ports.
  unsigned max_connections_per_sandbox = 64;
  // Connections open at once from one client address, over all sandboxes.
  unsigned max_connections_per_source = 32;
  // A guest that does not accept within this is given up on, and the
  // client's connection closed.
  std::chrono::milliseconds connect_timeout{5000};
  // Which client addresses may connect (the remote doors' IP filter); unset:
  // any. Refused ones are closed at accept.
  std::function<bool(Ipv4)> admit;
};

class PortForwarder {
 public:
  // kInvalidArgument for a bad address or an empty/reversed range.
  explicit PortForwarder(ForwarderOptions options);
  ~PortForwarder();
  PortForwarder(const PortForwarder&) = delete;
  PortForwarder& operator=(const PortForwarder&) = delete;

  // Listens on `port` (restoring a recorded forward) or, when absent, on a
  // free port of the range: bind() itself is the check, so two sandboxes
  // can never get the same port. Returns the port. kResourceExhausted when
  // no port of the range can be bound; kAlreadyExists if `owner` already
  // forwards to `target_port`. A sandbox may have several forwards, one
  // per guest port.
  std::uint16_t Open(const SandboxId& owner, Ipv4 target, std::uint16_t target_port,
                     std::optional<std::uint16_t> port = std::nullopt);

  // Closes every listener and connection of `owner` (idempotent).
  void Close(const SandboxId& owner);
  // Closes the forward of `owner` to `target_port` and its connections
  // (idempotent).
  void Close(const SandboxId& owner, std::uint16_t target_port);

  std::optional<std::uint16_t> PortOf(const SandboxId& owner, std::uint16_t target_port) const;
  std::size_t ConnectionCount(const SandboxId& owner) const;

 private:
  struct Forward;
  struct Connection;
  struct Direction;

  using Clock = std::chrono::steady_clock;

  void Loop();
  // The epoll_wait timeout: until the next connect deadline or re-arm.
  int NextTimeoutMs() const;
  void ExpireLocked(Clock::time_point now);
  void HandleListener(std::uint64_t key);
  void AcceptOne(std::uint64_t listener_key, Forward& forward, UniqueFd client,
                 const sockaddr_in& peer);
  void HandleConnection(std::uint64_t key, std::uint32_t events);
  static bool Pump(Direction& d);
  void UpdateInterest(Connection& c);
  void CloseConnectionLocked(std::uint64_t key);
  std::uint64_t Register(int fd, std::uint32_t events);
  void SetListenerInterest(const Forward& forward, std::uint64_t key, std::uint32_t events);

  ForwarderOptions options_;
  std::uint32_t listen_address_;  // network byte order
  UniqueFd epoll_;
  UniqueFd wakeup_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::uint64_t next_key_ = 1;
  void CloseListenerLocked(
      std::map<std::pair<SandboxId, std::uint16_t>, std::uint64_t>::iterator it);

  std::map<std::pair<SandboxId, std::uint16_t>, std::uint64_t> listener_of_;  // by guest port
  std::map<std::uint64_t, std::unique_ptr<Forward>> listeners_;
  std::map<std::uint64_t, std::shared_ptr<Connection>> connections_;  // by each of its fd keys
  std::multimap<Clock::time_point, std::uint64_t> connecting_;        // deadline -> client key
  std::map<std::uint32_t, unsigned> per_source_;                      // open connections by client
  std::map<SandboxId, unsigned> per_sandbox_;                         // and by sandbox
  // Out of descriptors (EMFILE): listeners stop being watched until then,
  // instead of waking the loop on every pending connection.
  std::optional<Clock::time_point> accept_paused_until_;
  bool accept_failing_ = false;  // warned once per episode
  std::uint32_t next_port_offset_ = 0;
  std::thread thread_;
};

}  // namespace ephemera

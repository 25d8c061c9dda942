// The host-port forwarder: one TCP listener per sandbox on a port from a
// range, each accepted connection relayed to the guest's sshd through a
// buffer per direction that grows with the traffic (large copies beat
// splice here; see port_forwarder.cc). One epoll thread serves every
// sandbox.
#pragma once

#include <atomic>
#include <cstdint>
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
  unsigned max_connections_per_sandbox = 64;
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
  // no port of the range can be bound; kAlreadyExists if `owner` has one.
  std::uint16_t Open(const SandboxId& owner, Ipv4 target, std::uint16_t target_port,
                     std::optional<std::uint16_t> port = std::nullopt);

  // Closes the listener and every connection of `owner` (idempotent).
  void Close(const SandboxId& owner);

  std::optional<std::uint16_t> PortOf(const SandboxId& owner) const;
  std::size_t ConnectionCount(const SandboxId& owner) const;

 private:
  struct Forward;
  struct Connection;
  struct Direction;

  void Loop();
  void HandleListener(std::uint64_t key);
  void HandleConnection(std::uint64_t key, std::uint32_t events);
  static bool Pump(Direction& d);
  void UpdateInterest(Connection& c);
  void CloseConnectionLocked(std::uint64_t key);
  std::uint64_t Register(int fd, std::uint32_t events);

  ForwarderOptions options_;
  std::uint32_t listen_address_;  // network byte order
  UniqueFd epoll_;
  UniqueFd wakeup_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::uint64_t next_key_ = 1;
  std::map<SandboxId, std::uint64_t> listener_of_;
  std::map<std::uint64_t, std::unique_ptr<Forward>> listeners_;
  std::map<std::uint64_t, std::shared_ptr<Connection>> connections_;  // by each of its fd keys
  std::uint32_t next_port_offset_ = 0;
  std::thread thread_;
};

}  // namespace ephemera

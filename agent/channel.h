// The virtio-serial port and its line framing.
//
// virtio_console tells the guest when the host side of a port is not
// connected only by read() returning 0, and poll() then reports the port
// readable (POLLIN | POLLHUP) at once: a loop around poll would spin. It
// raises SIGIO (O_ASYNC) when the host connects or data arrives, so a
// port without host waits for that signal, with a timeout as fallback.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"

namespace ephemera::agent {

// The device node of the virtio-serial port named `name` ("/dev/vport0p1"),
// or "" when there is none (yet).
std::string FindPort(const std::string& name,
                     const std::string& sys_class = "/sys/class/virtio-ports");

// Opens the port named `name`, waiting up to `timeout` for it and its
// device node to appear (the module may still be probing). -1 (errno set)
// when it does not.
int OpenPort(const std::string& name, std::chrono::milliseconds timeout);

// Splits bytes into lines. A line longer than the limit is reported once
// and skipped up to its '\n'; empty lines are skipped.
class LineFramer {
 public:
  struct Frame {
    bool overlong;
    std::string line;
  };
  explicit LineFramer(size_t max_line = kMaxLine) : max_line_(max_line) {}
  std::vector<Frame> Feed(std::string_view bytes);
  // Drops a partial line (the host that sent it went away).
  void Reset();

 private:
  size_t max_line_;
  std::string partial_;
  bool skipping_ = false;
};

// How long an answer waits for a host that the guest does not see
// connected yet.
inline constexpr std::chrono::milliseconds kHostConnectGrace{2000};

// The open port, non-blocking and O_ASYNC. SIGIO is blocked in the whole
// process (before the port is set up) and only ever waited for.
class Port {
 public:
  explicit Port(int fd);
  ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  // Waits for bytes: > 0 bytes read, 0 when the host side is not
  // connected, -1 on errors (errno).
  ssize_t Read(char* buffer, size_t size);
  // Read without waiting: -1 with EAGAIN when a connected host sent nothing.
  ssize_t TryRead(char* buffer, size_t size);
  int fd() const { return fd_; }
  // Writes `line` and '\n'. False when the host is still not connected
  // after kHostConnectGrace: the answer belonged to a connection that went
  // away, and is dropped. A host that leaves and another that connects
  // within the grace get it instead (the port cannot tell them apart); the
  // daemon, the only one who connects, matches answers by request id.
  bool WriteLine(std::string_view line);
  // Sleeps until SIGIO (the host connected, or data came) or `timeout`.
  void WaitForHost(std::chrono::milliseconds timeout);

 private:
  int fd_;
};

// Blocks SIGIO and SIGCHLD (taken through a signalfd by the loop) in the calling thread (the only
// one), so that it stays pending until WaitForHost takes it.
void BlockSigio();

}  // namespace ephemera::agent

// A TCP server on 127.0.0.1 (a free port) that hands each accepted
// connection to `serve` on a thread of its own, for tests and benchmarks.
#pragma once

#include <cstdint>
#include <functional>
#include <thread>

#include "core/unique_fd.h"

namespace ephemera::test {

class LoopbackServer {
 public:
  // `serve` owns nothing: the connection is closed after it returns.
  explicit LoopbackServer(std::function<void(int fd)> serve);
  ~LoopbackServer();
  std::uint16_t port() const { return port_; }

  static void Echo(int fd);     // writes back what it reads
  static void Discard(int fd);  // reads until EOF

 private:
  UniqueFd fd_;
  std::uint16_t port_ = 0;
  std::function<void(int)> serve_;
  std::thread thread_;
};

// A connected socket to 127.0.0.1:port, or an invalid UniqueFd.
UniqueFd ConnectLoopback(std::uint16_t port);

}  // namespace ephemera::test

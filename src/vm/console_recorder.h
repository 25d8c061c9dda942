// Guests' serial consoles, recorded by the daemon with a bound on disk use.
// QEMU serves each console on a unix socket (and drops output while no one
// is connected, so a guest is never blocked); one thread here copies every
// console into its VM's log file, rotating it so that a log and its one
// predecessor never hold more than `max_bytes` together, however much a
// guest writes. After a daemon restart, attaching again resumes recording.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "core/sandbox_id.h"
#include "core/unique_fd.h"

namespace ephemera {

class ConsoleRecorder {
 public:
  explicit ConsoleRecorder(std::size_t max_bytes = 1 << 20);
  ~ConsoleRecorder();
  ConsoleRecorder(const ConsoleRecorder&) = delete;
  ConsoleRecorder& operator=(const ConsoleRecorder&) = delete;

  // Connects to `socket` and appends what arrives to `log` (and `log`.1
  // once rotated). Replaces a previous recording of `id`. kUnavailable if
  // the socket does not accept.
  void Attach(const SandboxId& id, const std::filesystem::path& socket,
              const std::filesystem::path& log);
  // The same from a descriptor already open: the read end of a pipe that a
  // container's output goes to.
  void AttachSource(const SandboxId& id, UniqueFd source, const std::filesystem::path& log);
  // Stops recording `id` (idempotent).
  void Detach(const SandboxId& id);
  bool Recording(const SandboxId& id) const;

 private:
  struct Console {
    UniqueFd socket;
    UniqueFd log;
    std::filesystem::path log_path;
    std::size_t written = 0;  // bytes in the current log file
  };
  void Loop();
  void Drain(Console& console);
  void Rotate(Console& console);

  const std::size_t max_bytes_;
  UniqueFd epoll_;
  UniqueFd wakeup_;
  bool stopping_ = false;  // guarded by mutex_
  mutable std::mutex mutex_;
  std::map<SandboxId, Console> consoles_;
  std::map<int, SandboxId> by_fd_;
  std::thread thread_;
};

}  // namespace ephemera

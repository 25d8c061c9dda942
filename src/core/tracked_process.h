// A daemonized helper process (QEMU, dnsmasq) found again through its
// pidfile: the pid is trusted only if /proc shows a command line naming the
// owner's directory (pids get reused), and signals go through a pidfd so
// they cannot hit a successor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "core/unique_fd.h"

namespace ephemera {

class TrackedProcess {
 public:
  // The live process recorded in `pidfile` whose command line names
  // `owner_dir`, or nullopt if there is none (never started, exited, reused).
  // kUnavailable when that cannot be told (a descriptor limit, an I/O
  // error): never mistake "could not check" for "not running".
  static std::optional<TrackedProcess> Find(const std::filesystem::path& pidfile,
                                            const std::filesystem::path& owner_dir);
  // The same with any text the command line must contain.
  static std::optional<TrackedProcess> Find(const std::filesystem::path& pidfile,
                                            const std::string& needle);
  // A process this daemon started itself, with the pidfd it took then.
  static TrackedProcess Adopt(pid_t pid, UniqueFd pidfd);

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }  // readable once the process has exited
  bool Alive() const;
  // Sends `sig` (default SIGKILL); a process already gone is fine.
  void Signal(int sig);
  void Kill() { Signal(9); }
  // SIGTERM, then SIGKILL if it has not exited within `grace`; throws if it
  // survives even that.
  void Stop(std::chrono::milliseconds grace);
  // Waits for the process to exit; true if it did within `timeout`.
  bool WaitExit(std::chrono::milliseconds timeout) const;

 private:
  TrackedProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_;
  UniqueFd pidfd_;
};

}  // namespace ephemera

// Finding and stopping a VM's QEMU process safely: a pid is trusted only if
// /proc shows it is QEMU started for this VM's directory (pids get reused),
// and signals go through a pidfd so they cannot hit a successor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "core/unique_fd.h"

namespace ephemera {

class VmProcess {
 public:
  // The live QEMU process recorded in `pidfile` whose command line names
  // `vm_dir`, or nullopt if there is none (never started, exited, reused).
  static std::optional<VmProcess> Find(const std::filesystem::path& pidfile,
                                       const std::filesystem::path& vm_dir);

  pid_t pid() const { return pid_; }
  bool Alive() const;
  // Sends SIGKILL (idempotent once the process is gone).
  void Kill();
  // Waits for the process to exit; true if it did within `timeout`.
  bool WaitExit(std::chrono::milliseconds timeout) const;

 private:
  VmProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_;
  UniqueFd pidfd_;
};

}  // namespace ephemera

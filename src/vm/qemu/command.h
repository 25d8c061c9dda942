// Builds QEMU's argv from a VM spec. A pure function, so the exact command
// line is tested without starting anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "vm/qemu/vm_dir.h"
#include "vm/vm.h"

namespace ephemera {

// QEMU opens nothing of the host's by itself but the image files: the
// daemon hands it these descriptors.
inline constexpr int kQmpFd = 3;             // a listening unix socket
inline constexpr int kConsoleFd = 4;         // a listening unix socket
inline constexpr int kTapFd = 5;             // a queue of the sandbox's TAP
inline constexpr int kDiskFd = 6;            // the qcow2 overlay, read-write
inline constexpr int kDiskReadOnlyFd = 7;    // the same, read-only (QEMU probes with it)
inline constexpr int kAgentFd = 8;           // a listening unix socket
inline constexpr int kFirstGuestFileFd = 9;  // then one per guest file
inline constexpr int kBackingFd = 47;        // a snapshot's disk, read-only (past the files)
inline constexpr int kMemoryFd = 48;         // guest RAM: a snapshot's memfd

// Where guest RAM lives. A snapshot template writes it to a file the daemon
// keeps (kSharedFile); its clones map that file copy-on-write (kPrivateFile),
// so they share its pages.
enum class GuestMemory { kAnonymous, kSharedFile, kPrivateFile };

struct QemuLaunch {
  std::string binary;
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kTcg;  // resolved: kKvm or kTcg
  unsigned tcg_tb_size_mib = 32;
  std::optional<std::uint64_t> tsc_khz;  // passed to microvm guests under TCG
  bool seccomp_sandbox = true;
  GuestMemory memory = GuestMemory::kAnonymous;
  bool mem_merge = false;  // guest memory mergeable by KSM
  // The overlay's backing file is a snapshot's disk, named /dev/fdset/2 in
  // the overlay and handed over as kBackingFd.
  bool backing_fd = false;
  VmSpec spec;
  VmDir dir;
};

// The command-line text that identifies a VM's QEMU process (for adoption).
std::string QemuProcessMarker(const SandboxId& id);

// What a clone's overlay names as its backing file (see QemuLaunch::backing_fd).
inline constexpr char kBackingFdSet[] = "/dev/fdset/2";

std::vector<std::string> BuildQemuArgs(const QemuLaunch& launch);

// A command line of GuestMemory::kPrivateFile with plain RAM of the same id
// instead: for a restore whose stream carries all of the memory (a pause).
void UseAnonymousMemory(std::vector<std::string>& argv);

// Rejects characters that QEMU's option parser would split on.
void CheckQemuOptionValue(const std::string& what, const std::string& value);

}  // namespace ephemera

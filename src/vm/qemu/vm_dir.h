// The files one QEMU VM owns, all under one directory named by its id, so
// that removing the directory removes the VM's every trace.
#pragma once

#include <filesystem>

#include "core/sandbox_id.h"

namespace ephemera {

struct VmDir {
  std::filesystem::path root;

  static VmDir For(const std::filesystem::path& vms_dir, const SandboxId& id) {
    return VmDir{vms_dir / id.str()};
  }
  std::filesystem::path overlay() const { return root / "disk.qcow2"; }
  std::filesystem::path qmp_socket() const { return root / "qmp.sock"; }
  std::filesystem::path console_socket() const { return root / "console.sock"; }
  std::filesystem::path agent_socket() const { return root / "agent.sock"; }
  std::filesystem::path pidfile() const { return root / "qemu.pid"; }
  std::filesystem::path serial_log() const { return root / "serial.log"; }
  std::filesystem::path qemu_log() const { return root / "qemu.log"; }
  std::filesystem::path metadata() const { return root / "vm.json"; }
  // The whole state of a paused VM (QEMU's migration stream), and the file
  // it is written to until complete.
  std::filesystem::path saved_state() const { return root / "saved-state"; }
  std::filesystem::path saved_state_partial() const { return root / "saved-state.part"; }
  std::filesystem::path guest_file(std::size_t index) const {
    return root / ("guest-file-" + std::to_string(index));
  }
};

}  // namespace ephemera

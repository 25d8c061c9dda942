// What the engine asks of a hypervisor driver, and what it gets back.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/sandbox_id.h"
#include "image/image.h"

namespace ephemera {

struct NicSpec {
  std::string tap;  // an existing TAP device on the host
  std::string mac;  // aa:bb:cc:dd:ee:ff
};

// A small file handed to the guest before boot (QEMU fw_cfg), such as the
// endpoint's authorized key. Stored 0600 in the VM's directory.
struct GuestFile {
  std::string name;  // fw_cfg name, e.g. "opt/ephemera/endpoint_authorized_keys"
  std::string content;
};

struct VmSpec {
  explicit VmSpec(SandboxId sandbox_id) : id(std::move(sandbox_id)) {}

  SandboxId id;
  Image image;
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::string extra_cmdline;  // appended to the image's kernel command line
  std::optional<NicSpec> nic;
  std::vector<GuestFile> guest_files;
};

enum class VmState { kRunning, kPaused, kShutoff };
std::string_view VmStateName(VmState state);

struct VmInfo {
  SandboxId id;
  VmState state = VmState::kShutoff;
  pid_t pid = 0;
  std::filesystem::path dir;         // everything this VM owns on the host
  std::filesystem::path serial_log;  // the guest's console output
};

}  // namespace ephemera

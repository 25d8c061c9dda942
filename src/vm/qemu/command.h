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

struct QemuLaunch {
  std::string binary;
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kTcg;  // resolved: kKvm or kTcg
  unsigned tcg_tb_size_mib = 32;
  std::optional<std::uint64_t> tsc_khz;  // passed to microvm guests under TCG
  VmSpec spec;
  VmDir dir;
};

std::vector<std::string> BuildQemuArgs(const QemuLaunch& launch);

// Rejects characters that QEMU's option parser would split on.
void CheckQemuOptionValue(const std::string& what, const std::string& value);

}  // namespace ephemera

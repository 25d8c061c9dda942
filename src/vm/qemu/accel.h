// Choosing QEMU's accelerator: KVM only when it can really run an ordinary
// guest, TCG otherwise (with the reason, for the log).
#pragma once

#include <string>

#include "config/config.h"

namespace ephemera {

struct AccelChoice {
  Accel accel;         // kKvm or kTcg, never kAuto
  std::string reason;  // why this one was chosen
};

struct KvmProbe {
  bool usable = false;
  std::string reason;  // why not, or what was checked
};

// Checks /dev/kvm: API version, the PVM flavour (which boots only
// PVM-enabled kernels), and a real one-instruction guest run.
KvmProbe ProbeKvm(const std::string& device = "/dev/kvm",
                  const std::string& sysfs_module_dir = "/sys/module");

// `auto` -> KVM when the probe passes, else TCG; `kvm` requires a usable KVM
// (kUnavailable otherwise); `tcg` is always software.
AccelChoice ChooseAccel(Accel requested, const KvmProbe& probe);

}  // namespace ephemera

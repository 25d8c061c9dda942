// The hypervisor driver interface. The qemu driver implements it with a
// QEMU process per VM; a libvirt driver implements the same calls.
#pragma once

#include <chrono>
#include <string_view>
#include <vector>

#include "vm/vm.h"

namespace ephemera {

class VmDriver {
 public:
  virtual ~VmDriver() = default;

  virtual std::string_view name() const = 0;

  // Starts a VM. On failure throws and leaves nothing behind (no process,
  // no file). kInvalidArgument for a bad spec, kUnavailable for a missing
  // program or device, kAlreadyExists if the id is in use.
  virtual VmInfo Start(const VmSpec& spec) = 0;

  // The VM's current state; kShutoff once its process has exited.
  // kNotFound when the driver knows no such VM.
  virtual VmInfo Inspect(const SandboxId& id) = 0;

  // Asks the guest to power off (ACPI); returns true if it did within
  // `timeout`. The VM's files stay until Destroy.
  virtual bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) = 0;

  // Stops the VM hard if it still runs and removes every file it owns.
  // Idempotent: destroying an unknown or half-created VM succeeds.
  virtual void Destroy(const SandboxId& id) = 0;

  // Every VM this driver finds on the host, running or not (for reconcile).
  virtual std::vector<SandboxId> List() = 0;
};

}  // namespace ephemera

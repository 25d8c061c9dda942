// The embedded hypervisor driver: one QEMU process per VM, started
// daemonized (so VMs outlive a daemon restart and are adopted again), and
// controlled over QMP.
#pragma once

#include <filesystem>

#include "config/config.h"
#include "vm/driver.h"
#include "vm/qemu/accel.h"
#include "vm/qemu/vm_dir.h"

namespace ephemera {

struct QemuDriverOptions {
  std::filesystem::path state_dir;  // VMs live in state_dir/vms/<id>/
  VmConfig vm;
  AccelChoice accel;  // resolved once at startup, see ChooseAccel
};

class QemuDriver : public VmDriver {
 public:
  explicit QemuDriver(QemuDriverOptions options);

  std::string_view name() const override { return "qemu"; }
  VmInfo Start(const VmSpec& spec) override;
  VmInfo Inspect(const SandboxId& id) override;
  bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) override;
  void Destroy(const SandboxId& id) override;
  std::vector<SandboxId> List() override;

  // Checks a spec against the host before anything is created.
  void Validate(const VmSpec& spec) const;

 private:
  std::filesystem::path vms_dir() const { return options_.state_dir / "vms"; }
  void CreateFiles(const VmSpec& spec, const VmDir& dir) const;
  void Launch(const VmSpec& spec, const VmDir& dir) const;

  QemuDriverOptions options_;
  std::filesystem::path qemu_binary_;
  std::filesystem::path qemu_img_binary_;
  std::optional<std::uint64_t> tsc_khz_;
};

}  // namespace ephemera

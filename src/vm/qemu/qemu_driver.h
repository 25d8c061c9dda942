// The embedded hypervisor driver: one QEMU process per VM, controlled over
// QMP. QEMU is confined as libvirt confines it, and more: it runs as a uid
// of its own per VM (so one compromised QEMU cannot touch another), under
// QEMU's seccomp sandbox, in a cgroup with memory and pids limits, with no
// path into the VM's folder: the daemon opens the disk, the TAP, the QMP
// and console sockets and the guest files, and hands QEMU the descriptors.
// QEMU outlives a daemon restart (it is in a session of its own) and is
// adopted again through its pidfile.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "config/config.h"
#include "core/cgroup.h"
#include "core/tracked_process.h"
#include "vm/console_recorder.h"
#include "vm/driver.h"
#include "vm/qemu/accel.h"
#include "vm/qemu/vm_dir.h"

namespace ephemera {

struct QemuDriverOptions {
  std::filesystem::path state_dir;  // VMs live in state_dir/vms/<id>/
  VmConfig vm;
  AccelChoice accel;  // resolved once at startup, see ChooseAccel
  // Where VM cgroups are made; null: none (logged once).
  std::shared_ptr<const Cgroups> cgroups;
};

class QemuDriver : public VmDriver {
 public:
  explicit QemuDriver(QemuDriverOptions options);

  std::string_view name() const override { return "qemu"; }
  // fw_cfg files are read through descriptors QEMU inherits.
  bool passes_secret_files() const override { return true; }
  bool supports_agent() const override { return true; }
  bool supports_pause() const override { return true; }
  void Pause(const SandboxId& id) override;
  VmInfo Resume(const SandboxId& id) override;
  VmInfo Start(const VmSpec& spec) override;
  VmInfo Inspect(const SandboxId& id) override;
  bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) override;
  void Destroy(const SandboxId& id) override;
  std::vector<SandboxId> List() override;

  // Checks a spec against the host before anything is created.
  void Validate(const VmSpec& spec) const;

 private:
  struct Identity {
    uid_t uid;
    gid_t gid;
  };
  std::filesystem::path vms_dir() const { return options_.state_dir / "vms"; }
  // What it takes to start a VM's QEMU, again for a resume (in vm.json).
  struct LaunchPlan {
    std::vector<std::string> argv;
    std::string tap;  // "" without a NIC
    bool disk = false;
    std::size_t guest_files = 0;
    bool agent = false;
    CgroupLimits limits;
    unsigned memory_mib = 0;
    std::string qemu_version;  // the build that may restore its saved state
  };
  static std::chrono::milliseconds MigrationTimeout(const LaunchPlan& plan);
  // At adoption: a QEMU left stopped by a pause or resume the daemon died
  // in is ended (its state saved) or continued (not saved).
  void FinishInterruptedMove(const SandboxId& id, const VmDir& dir);
  // After its QEMU ended (a pause): its console, cgroup, process record and
  // pidfile go; its folder stays. Failures are logged.
  void ForgetProcess(const SandboxId& id, const VmDir& dir);
  LaunchPlan PlanLaunch(const VmSpec& spec, const VmDir& dir) const;
  static LaunchPlan ReadLaunchPlan(const VmDir& dir);
  void CreateFiles(const VmSpec& spec, const VmDir& dir, const std::optional<Identity>& as,
                   const LaunchPlan& plan) const;
  // Spawns QEMU by `plan`; with `incoming_state` (a descriptor), restores
  // that saved state instead of booting.
  void Launch(const SandboxId& id, const VmDir& dir, const LaunchPlan& plan,
              const std::optional<Identity>& as, int incoming_state,
              std::chrono::milliseconds restore_timeout);
  std::optional<Identity> IdentityOf(const SandboxId& id);
  // The VM's process: the one held since start or adoption, else found
  // through its pidfile (kUnavailable when that cannot be checked).
  std::shared_ptr<TrackedProcess> Process(const SandboxId& id, const VmDir& dir);
  void Adopt();
  std::optional<Identity> TakeIdentity(const SandboxId& id);
  void ReleaseIdentity(const SandboxId& id);
  CgroupLimits LimitsFor(const VmSpec& spec) const;
  unsigned TbSizeFor(const VmSpec& spec) const;  // MiB of TCG translation cache

  QemuDriverOptions options_;
  std::filesystem::path qemu_binary_;
  std::filesystem::path qemu_img_binary_;
  std::string qemu_version_;
  std::optional<std::uint64_t> tsc_khz_;
  std::optional<gid_t> kvm_gid_;  // the device group QEMU needs for /dev/kvm
  ConsoleRecorder consoles_;

  std::mutex mutex_;  // guards the two maps below
  std::map<SandboxId, std::shared_ptr<TrackedProcess>> processes_;
  std::map<SandboxId, unsigned> slots_;  // uid_base + slot is the VM's uid
};

}  // namespace ephemera

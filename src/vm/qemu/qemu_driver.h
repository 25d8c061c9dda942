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
#include <functional>
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
#include "vm/qemu/command.h"
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
  // Templates live in this process's memory: their folders go with it.
  ~QemuDriver() override;

  std::string_view name() const override { return "qemu"; }
  // fw_cfg files are read through descriptors QEMU inherits.
  bool passes_secret_files() const override { return true; }
  bool supports_agent() const override { return true; }
  bool supports_pause() const override { return true; }
  bool supports_snapshots() const override { return true; }
  void BuildSnapshot(const VmSpec& spec, const std::function<void(const VmInfo&)>& ready) override;
  std::optional<VmInfo> StartFromSnapshot(const VmSpec& spec) override;
  void DropSnapshot(const VmSpec& spec, const std::string& why) override;
  void Pause(const SandboxId& id) override;
  VmInfo Resume(const SandboxId& id) override;
  VmInfo Start(const VmSpec& spec) override;
  VmInfo Inspect(const SandboxId& id) override;
  std::optional<ResourceUsage> Usage(const SandboxId& id) override;
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
  // Snapshot templates: state_dir/snapshots/<key>-<n>/ (see snapshots.cc).
  std::filesystem::path snapshots_dir() const { return options_.state_dir / "snapshots"; }
  struct Snapshot {
    std::string key;               // what VMs it serves (SnapshotKey)
    std::string name;              // its folder
    UniqueFd memory;               // the guest RAM: a memfd sealed against writes
    std::string qemu_stamp;        // the QEMU binary that made it (QemuStamp)
    std::uint64_t disk_bytes = 0;  // its disk's virtual size
  };
  // A template's disk, which backs its clones' overlays.
  std::filesystem::path SnapshotDisk(const std::string& name) const {
    return snapshots_dir() / name / "disk.qcow2";
  }
  std::string SnapshotKey(const VmSpec& spec) const;
  std::string QemuStamp() const;
  // Stops serving `key`'s template (logged with `why`).
  void DropSnapshot(const std::string& key, const std::string& why);
  // Removes the folders of templates neither served nor backing a VM's disk,
  // and of builds a crash interrupted (their QEMU too).
  void CollectSnapshots();
  // The memory file a VM made from a snapshot maps again on resume: its
  // template's if still known; else none (plain RAM, see UseAnonymousMemory).
  UniqueFd MemoryForResume(const std::string& snapshot);
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
    GuestMemory memory = GuestMemory::kAnonymous;
    std::string snapshot;  // the template it was restored from, if any
  };
  // What Launch is handed besides the plan.
  struct LaunchInputs {
    int incoming_state = -1;  // a saved state to restore instead of booting
    std::chrono::milliseconds restore_timeout{0};
    bool ignore_shared = false;  // the state leaves out the RAM in the memory file
    int memory = -1;             // the memory file (plan.memory)
    int tap = -1;                // a TAP queue already open; else plan.tap's is opened
  };
  // Start's frame: the VM's folder made, `body` run, everything undone if it throws.
  VmInfo StartWith(const VmSpec& spec, const std::function<void(const VmDir&)>& body);
  static std::chrono::milliseconds MigrationTimeout(const LaunchPlan& plan);
  // At adoption: a QEMU left stopped by a pause or resume the daemon died
  // in is ended (its state saved) or continued (not saved).
  void FinishInterruptedMove(const SandboxId& id, const VmDir& dir);
  // After its QEMU ended (a pause): its console, cgroup, process record and
  // pidfile go; its folder stays. Failures are logged.
  void ForgetProcess(const SandboxId& id, const VmDir& dir);
  // `snapshot`: the template the VM is restored from (its disk backs the VM's).
  LaunchPlan PlanLaunch(const VmSpec& spec, const VmDir& dir,
                        GuestMemory memory = GuestMemory::kAnonymous,
                        const std::string& snapshot = "") const;
  static LaunchPlan ReadLaunchPlan(const VmDir& dir);
  // The disk overlay (on the image's base, or with plan.snapshot on its
  // template's disk of `backing_bytes`), guest files, vm.json.
  void CreateFiles(const VmSpec& spec, const VmDir& dir, const std::optional<Identity>& as,
                   const LaunchPlan& plan, std::uint64_t backing_bytes = 0) const;
  // Spawns QEMU by `plan`; with inputs.incoming_state, restores that saved
  // state instead of booting.
  void Launch(const SandboxId& id, const VmDir& dir, const LaunchPlan& plan,
              const std::optional<Identity>& as, const LaunchInputs& inputs);
  std::optional<Identity> IdentityOf(const SandboxId& id);
  // The VM's process: the one held since start or adoption, else found
  // through its pidfile (kUnavailable when that cannot be checked).
  std::shared_ptr<TrackedProcess> Process(const SandboxId& id, const VmDir& dir);
  void Adopt();
  // vm.ksm: the kernel's samepage merging on (logged, not fatal, when it cannot be).
  void StartKsm() const;
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
  std::map<SandboxId, unsigned> slots_;                         // uid_base + slot is the VM's uid
  std::map<std::string, std::shared_ptr<Snapshot>> snapshots_;  // served, by key
  // Every template still in use (served, or held by a restore under way).
  std::map<std::string, std::weak_ptr<Snapshot>> snapshots_held_;  // by name
  std::set<std::string> snapshots_building_;                       // their folders' names
};

}  // namespace ephemera

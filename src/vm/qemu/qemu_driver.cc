#include "vm/qemu/qemu_driver.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/subprocess.h"
#include "core/unix_socket.h"
#include "vm/qemu/command.h"
#include "vm/qemu/host.h"
#include "vm/qemu/qmp.h"

namespace ephemera {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr unsigned kMinMemoryMib = 128;
constexpr unsigned kMaxSlots = 65536;
constexpr auto kLaunchTimeout = 30s;
constexpr std::string_view kCgroupPrefix = "vm-";

std::string CgroupName(const SandboxId& id) { return std::string(kCgroupPrefix) + id.str(); }

fs::path RequireProgram(const std::string& name, const std::string& package) {
  auto path = FindProgram(name);
  if (!path) {
    Fail(ErrorCode::kUnavailable, "'{}' not found (install the Debian package {})", name, package);
  }
  return *path;
}

bool IsValidGuestFileName(const std::string& name) {
  // QEMU reserves names outside opt/; keep ours to a plain character set.
  if (name.rfind("opt/", 0) != 0 || name.size() > 55) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '_' && c != '.' &&
        c != '-') {
      return false;
    }
  }
  return name.find("..") == std::string::npos;
}

// An unprivileged QEMU opens image files by path: each must be readable by
// others, and every folder above it searchable.
void CheckReadableByOthers(const fs::path& file, const std::string& image) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || (st.st_mode & S_IROTH) == 0) {
    Fail(ErrorCode::kFailedPrecondition,
         "image '{}' file {} is not readable by QEMU's unprivileged user (it needs o+r)", image,
         file.string());
  }
  for (fs::path dir = fs::absolute(file).parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (::stat(dir.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) {
      Fail(ErrorCode::kFailedPrecondition,
           "image '{}' file {} is not reachable by QEMU's unprivileged user: folder {} needs o+x",
           image, file.string(), dir.string());
    }
    if (dir == dir.parent_path()) break;
  }
}

// The first line of `qemu --version`: saved state is restored only by the
// same build (its machine types and device state are versioned with it).
std::string QemuVersion(const fs::path& qemu) {
  ProcessResult r = RunProcess({qemu.string(), "--version"}, kLaunchTimeout);
  std::string line = r.out.substr(0, r.out.find('\n'));
  if (!r.ok() || line.empty()) {
    Fail(ErrorCode::kUnavailable, "{} --version failed: {}", qemu.string(), r.err);
  }
  return line;
}

// What QEMU printed before it exited (its stderr goes to qemu.log).
std::string QemuLogTail(const VmDir& dir) {
  std::string text;
  try {
    text = ReadFile(dir.qemu_log());
  } catch (const Error&) {
    return "";
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > 2000) text = text.substr(text.size() - 2000);
  return text;
}

}  // namespace

QemuDriver::QemuDriver(QemuDriverOptions options)
    : options_(std::move(options)), consoles_(std::size_t{options_.vm.console_log_kib} * 1024) {
  qemu_binary_ = RequireProgram(options_.vm.qemu_binary, "qemu-system-x86");
  qemu_img_binary_ = RequireProgram(options_.vm.qemu_img_binary, "qemu-utils");
  qemu_version_ = QemuVersion(qemu_binary_);
  MakeDirs(vms_dir(), 0700);
  MakeDirs(snapshots_dir(), 0700);
  if (options_.accel.accel == Accel::kTcg && options_.vm.machine == MachineType::kMicrovm) {
    tsc_khz_ = HostTscKhz();
    spdlog::info("qemu: host TSC {} kHz, passed to microvm guests",
                 tsc_khz_ ? std::to_string(*tsc_khz_) : "unknown (not invariant)");
  }
  if (options_.accel.accel == Accel::kKvm && options_.vm.unprivileged) {
    struct stat st {};
    if (::stat("/dev/kvm", &st) == 0) kvm_gid_ = st.st_gid;
  }
  if (!options_.vm.unprivileged) {
    spdlog::warn("qemu: vm.unprivileged is off: QEMU runs as root");
  }
  if (!options_.cgroups) spdlog::warn("qemu: no cgroups: VMs run without memory or pids limits");
  if (options_.vm.ksm) StartKsm();
  Adopt();
  // Templates live in this process's memory: those of a previous one stay
  // only as the disks of VMs made from them.
  CollectSnapshots();
}

void QemuDriver::StartKsm() const {
  const fs::path run = "/sys/kernel/mm/ksm/run";
  try {
    std::string now = ReadFile(run);
    if (now.rfind('1', 0) == 0) {
      spdlog::info("qemu: vm.ksm: the kernel's samepage merging already runs");
      return;
    }
    UniqueFd fd = OpenFile(run, O_WRONLY);
    if (::write(fd.get(), "1", 1) != 1) FailErrno("cannot write " + run.string(), errno);
    spdlog::info("qemu: vm.ksm: started the kernel's samepage merging ({})", run.string());
  } catch (const Error& e) {
    spdlog::warn("qemu: vm.ksm is on, but the kernel's samepage merging cannot be started: {}",
                 e.what());
  }
}

void QemuDriver::Adopt() {
  const std::vector<SandboxId> vms = List();
  if (options_.cgroups) {
    // A cgroup whose VM folder is gone was left by a crash mid-destroy.
    for (const std::string& name : options_.cgroups->List()) {
      if (name.rfind(kCgroupPrefix, 0) != 0) continue;  // another driver's
      const std::string id = name.substr(kCgroupPrefix.size());
      if (!SandboxId::IsValid(id) ||
          std::binary_search(vms.begin(), vms.end(), SandboxId::Parse(id))) {
        continue;
      }
      try {
        options_.cgroups->Remove(name);
        spdlog::info("vm {}: removed the cgroup it left behind", name);
      } catch (const Error& e) {
        spdlog::warn("vm {}: cannot remove its stale cgroup: {}", name, e.what());
      }
    }
  }
  for (const SandboxId& id : vms) {
    VmDir dir = VmDir::For(vms_dir(), id);
    try {
      auto metadata = nlohmann::json::parse(ReadFile(dir.metadata()));
      if (auto slot = metadata.find("uid_slot"); slot != metadata.end() && slot->is_number()) {
        std::lock_guard lock(mutex_);
        slots_[id] = slot->get<unsigned>();
      }
    } catch (const std::exception&) {
      // A half-made VM: reconcile destroys it.
    }
    try {
      auto process = TrackedProcess::Find(dir.pidfile(), QemuProcessMarker(id));
      if (!process) continue;
      {
        std::lock_guard lock(mutex_);
        processes_[id] = std::make_shared<TrackedProcess>(std::move(*process));
      }
      consoles_.Attach(id, dir.console_socket(), dir.serial_log());
      FinishInterruptedMove(id, dir);
    } catch (const Error& e) {
      spdlog::warn("vm {}: cannot adopt its QEMU yet: {}", id.str(), e.what());
    }
  }
}

void QemuDriver::Validate(const VmSpec& spec) const {
  const std::uint64_t host_mib = HostMemoryMib();
  if (spec.memory_mib < kMinMemoryMib || spec.memory_mib > host_mib) {
    Fail(ErrorCode::kInvalidArgument,
         "memory_mib {} is out of range [{}, {}] (the host has {} MiB)", spec.memory_mib,
         kMinMemoryMib, host_mib, host_mib);
  }
  const unsigned host_cpus = HostCpuCount();
  if (spec.vcpus < 1 || spec.vcpus > host_cpus) {
    Fail(ErrorCode::kInvalidArgument, "vcpus {} is out of range [1, {}] (the host's CPUs)",
         spec.vcpus, host_cpus);
  }
  const Image& image = spec.image;
  for (const ImageFile* file : image.BootFiles()) {
    if (options_.vm.unprivileged) CheckReadableByOthers(file->path, image.name);
  }
  if (spec.nic) {
    if (!IsTunTapDevice(spec.nic->tap)) {
      Fail(ErrorCode::kInvalidArgument, "TAP device '{}' does not exist", spec.nic->tap);
    }
    if (!IsValidMac(spec.nic->mac)) {
      Fail(ErrorCode::kInvalidArgument, "'{}' is not a unicast MAC address", spec.nic->mac);
    }
  }
  if (kFirstGuestFileFd + spec.guest_files.size() > 40) {
    Fail(ErrorCode::kInvalidArgument, "too many guest files ({})", spec.guest_files.size());
  }
  for (const auto& file : spec.guest_files) {
    if (!IsValidGuestFileName(file.name)) {
      Fail(ErrorCode::kInvalidArgument,
           "guest file name '{}' must start with opt/ and use [A-Za-z0-9/_.-]", file.name);
    }
  }
}

std::optional<QemuDriver::Identity> QemuDriver::TakeIdentity(const SandboxId& id) {
  if (!options_.vm.unprivileged) return std::nullopt;
  std::lock_guard lock(mutex_);
  std::set<unsigned> used;
  for (const auto& [other, slot] : slots_) used.insert(slot);
  for (unsigned slot = 0; slot < kMaxSlots; ++slot) {
    if (used.count(slot)) continue;
    slots_[id] = slot;
    const auto uid = static_cast<uid_t>(options_.vm.uid_base + slot);
    return Identity{uid, static_cast<gid_t>(uid)};
  }
  Fail(ErrorCode::kResourceExhausted, "all {} QEMU uids are in use", kMaxSlots);
}

void QemuDriver::ReleaseIdentity(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  slots_.erase(id);
}

unsigned QemuDriver::TbSizeFor(const VmSpec& spec) const {
  // The image's need raises the configured size, never lowers it.
  return std::max(options_.vm.tcg_tb_size_mib, spec.image.tcg_tb_size_mib);
}

CgroupLimits QemuDriver::LimitsFor(const VmSpec& spec) const {
  std::uint64_t mib = spec.memory_mib + options_.vm.memory_overhead_mib;
  if (options_.accel.accel == Accel::kTcg) mib += TbSizeFor(spec);
  CgroupLimits limits;
  limits.memory_bytes = mib << 20;
  limits.pids = options_.vm.max_pids;
  return limits;
}

VmInfo QemuDriver::StartWith(const VmSpec& spec, const std::function<void(const VmDir&)>& body) {
  Validate(spec);
  VmDir dir = VmDir::For(vms_dir(), spec.id);
  if (::mkdir(dir.root.c_str(), 0700) != 0) {
    if (errno == EEXIST)
      Fail(ErrorCode::kAlreadyExists, "a VM with id {} already exists", spec.id.str());
    FailErrno(fmt::format("cannot create {}", dir.root.string()), errno);
  }
  try {
    body(dir);
    return Inspect(spec.id);
  } catch (...) {
    DestroyAfterFailedStart(spec.id);
    throw;
  }
}

VmInfo QemuDriver::Start(const VmSpec& spec) {
  return StartWith(spec, [&](const VmDir& dir) {
    std::optional<Identity> as = TakeIdentity(spec.id);
    LaunchPlan plan = PlanLaunch(spec, dir);
    CreateFiles(spec, dir, as, plan);
    Launch(spec.id, dir, plan, as, {});
    spdlog::info("vm {}: started ({} MiB, {} vCPU, {}, {}{})", spec.id.str(), spec.memory_mib,
                 spec.vcpus, MachineTypeName(options_.vm.machine), AccelName(options_.accel.accel),
                 as ? fmt::format(", uid {}", as->uid) : std::string(", as root"));
  });
}

QemuDriver::LaunchPlan QemuDriver::PlanLaunch(const VmSpec& spec, const VmDir& dir,
                                              GuestMemory memory,
                                              const std::string& snapshot) const {
  QemuLaunch launch{.binary = qemu_binary_.string(),
                    .machine = options_.vm.machine,
                    .accel = options_.accel.accel,
                    .tcg_tb_size_mib = TbSizeFor(spec),
                    .tsc_khz = tsc_khz_,
                    .seccomp_sandbox = options_.vm.seccomp_sandbox,
                    .memory = memory,
                    .mem_merge = options_.vm.ksm,
                    .backing_fd = !snapshot.empty(),
                    .spec = spec,
                    .dir = dir};
  LaunchPlan plan;
  plan.argv = BuildQemuArgs(launch);
  plan.tap = spec.nic ? spec.nic->tap : "";
  plan.disk = spec.image.format == ImageFormat::kKernel;
  plan.guest_files = spec.guest_files.size();
  plan.agent = spec.agent_channel;
  plan.limits = LimitsFor(spec);
  plan.memory_mib = spec.memory_mib;
  plan.qemu_version = qemu_version_;
  plan.memory = memory;
  plan.snapshot = snapshot;
  return plan;
}

void QemuDriver::CreateFiles(const VmSpec& spec, const VmDir& dir,
                             const std::optional<Identity>& as, const LaunchPlan& plan,
                             std::uint64_t backing_bytes) const {
  if (spec.image.format == ImageFormat::kKernel) {
    // The copy-on-write clone: the base (or a template's disk) stays read-only and shared.
    std::vector<std::string> argv = {qemu_img_binary_.string(), "create", "-q", "-f", "qcow2"};
    std::string base = spec.image.rootfs->path.string();
    if (plan.snapshot.empty()) {
      argv.insert(argv.end(), {"-F", std::string(DiskFormatName(spec.image.rootfs_format)), "-b",
                               base, dir.overlay().string()});
    } else {
      // QEMU gets the template's disk as a descriptor (its folder is closed
      // to QEMU's uid), by the name the overlay records; -u: not opened here.
      base = SnapshotDisk(plan.snapshot).string();
      argv.insert(argv.end(), {"-F", "qcow2", "-b", kBackingFdSet, "-u", dir.overlay().string(),
                               std::to_string(backing_bytes)});
    }
    auto result = RunProcess(argv, kLaunchTimeout);
    if (!result.ok()) {
      std::string detail = result.err.empty() ? result.out : result.err;
      while (!detail.empty() && detail.back() == '\n') detail.pop_back();
      ErrorCode code = detail.find("No space left") != std::string::npos
                           ? ErrorCode::kNoSpace
                           : ErrorCode::kFailedPrecondition;
      Fail(code, "cannot clone base disk {}: {}", base, detail);
    }
  }
  for (std::size_t i = 0; i < spec.guest_files.size(); ++i) {
    // QEMU reads these through /dev/fd/N, which checks the file's own
    // permissions: the VM's uid owns its files, nobody else's.
    WriteFileAtomic(dir.guest_file(i), spec.guest_files[i].content, 0400);
    if (as && ::chown(dir.guest_file(i).c_str(), as->uid, as->gid) != 0) {
      FailErrno(fmt::format("cannot hand {} to uid {}", dir.guest_file(i).string(), as->uid),
                errno);
    }
  }
  nlohmann::json metadata = {
      {"id", spec.id.str()},
      {"image", spec.image.name},
      {"image_version", spec.image.version},
      {"image_sha256", spec.image.PrimarySha256()},
      {"memory_mib", spec.memory_mib},
      {"vcpus", spec.vcpus},
      {"machine", std::string(MachineTypeName(options_.vm.machine))},
      {"accel", std::string(AccelName(options_.accel.accel))},
      {"tap", plan.tap},
      // What a resume needs to start the same QEMU again.
      {"argv", plan.argv},
      {"disk", plan.disk},
      {"guest_files", plan.guest_files},
      {"agent", plan.agent},
      {"memory_limit_bytes", plan.limits.memory_bytes.value_or(0)},
      {"qemu_version", plan.qemu_version},
      {"pids_limit", plan.limits.pids.value_or(0)},
      {"memory_file", plan.memory == GuestMemory::kPrivateFile},
      {"snapshot", plan.snapshot},
  };
  if (as) metadata["uid_slot"] = as->uid - options_.vm.uid_base;
  WriteFileAtomic(dir.metadata(), metadata.dump(2) + "\n", 0600);
}

void QemuDriver::Launch(const SandboxId& id, const VmDir& dir, const LaunchPlan& plan,
                        const std::optional<Identity>& as, const LaunchInputs& inputs) {
  const int incoming_state = inputs.incoming_state;
  SpawnSpec process;
  process.argv = plan.argv;
  if (plan.memory != GuestMemory::kAnonymous) {
    if (inputs.memory >= 0) {
      process.fds.emplace_back(inputs.memory, kMemoryFd);
    } else if (incoming_state >= 0 && !inputs.ignore_shared) {
      UseAnonymousMemory(process.argv);  // the saved state brings it all
    } else {
      Fail(ErrorCode::kInternal, "VM {} needs its memory file", id.str());
    }
  }
  if (incoming_state >= 0) {
    // Started waiting for its state (QMP migrate-incoming), not booting.
    process.argv.insert(process.argv.end(), {"-incoming", "defer"});
  }
  UniqueFd log = OpenFile(dir.qemu_log(), O_WRONLY | O_CREAT | O_APPEND);
  UniqueFd qmp = ListenUnix(dir.qmp_socket());
  UniqueFd console = ListenUnix(dir.console_socket());
  process.fds.insert(
      process.fds.end(),
      {{log.get(), 1}, {log.get(), 2}, {qmp.get(), kQmpFd}, {console.get(), kConsoleFd}});
  UniqueFd agent;
  if (plan.agent) {
    agent = ListenUnix(dir.agent_socket());
    process.fds.emplace_back(agent.get(), kAgentFd);
  }
  UniqueFd tap, disk, disk_ro, backing;
  if (inputs.tap >= 0) {
    process.fds.emplace_back(inputs.tap, kTapFd);
  } else if (!plan.tap.empty()) {
    tap = OpenTap(plan.tap);
    process.fds.emplace_back(tap.get(), kTapFd);
  }
  if (plan.disk) {
    disk = OpenFile(dir.overlay(), O_RDWR);
    disk_ro = OpenFile(dir.overlay(), O_RDONLY);
    process.fds.emplace_back(disk.get(), kDiskFd);
    process.fds.emplace_back(disk_ro.get(), kDiskReadOnlyFd);
  }
  if (!plan.snapshot.empty()) {
    backing = OpenFile(SnapshotDisk(plan.snapshot), O_RDONLY);
    process.fds.emplace_back(backing.get(), kBackingFd);
  }
  std::vector<UniqueFd> guest_files;
  for (std::size_t i = 0; i < plan.guest_files; ++i) {
    guest_files.push_back(OpenFile(dir.guest_file(i), O_RDONLY));
    process.fds.emplace_back(guest_files.back().get(), kFirstGuestFileFd + static_cast<int>(i));
  }
  if (as) {
    process.uid = as->uid;
    process.gid = as->gid;
    if (kvm_gid_) process.groups = {*kvm_gid_};
  }
  if (options_.cgroups)
    process.cgroup_procs = options_.cgroups->Create(CgroupName(id), plan.limits);

  SpawnedProcess spawned = Spawn(process);
  auto tracked = std::make_shared<TrackedProcess>(
      TrackedProcess::Adopt(spawned.pid, std::move(spawned.pidfd)));
  {
    std::lock_guard lock(mutex_);
    processes_[id] = tracked;
  }
  WriteFileAtomic(dir.pidfile(), std::to_string(spawned.pid) + "\n", 0600);
  // QEMU answers QMP once it is set up; if it exits first, its stderr says why.
  try {
    QmpClient qmp_client = QmpClient::Connect(dir.qmp_socket(), kLaunchTimeout, tracked->pidfd());
    if (incoming_state >= 0) {
      if (inputs.ignore_shared) qmp_client.SetMigrationCapability("x-ignore-shared", true);
      qmp_client.PassFd("incoming", incoming_state);
      qmp_client.Migrate("migrate-incoming", {{"uri", "fd:incoming"}}, inputs.restore_timeout);
    }
    consoles_.Attach(id, dir.console_socket(), dir.serial_log());
    qmp_client.Execute("cont");
  } catch (const Error& e) {
    std::string detail = QemuLogTail(dir);
    Fail(ErrorCode::kFailedPrecondition, "QEMU failed to {} VM {}: {}",
         incoming_state >= 0 ? "restore" : "start", id.str(),
         detail.empty() ? std::string(e.what()) : detail + " (" + e.what() + ")");
  }
}

QemuDriver::LaunchPlan QemuDriver::ReadLaunchPlan(const VmDir& dir) {
  LaunchPlan plan;
  try {
    auto j = nlohmann::json::parse(ReadFile(dir.metadata()));
    plan.argv = j.at("argv").get<std::vector<std::string>>();
    plan.tap = j.at("tap").get<std::string>();
    plan.disk = j.at("disk").get<bool>();
    plan.guest_files = j.at("guest_files").get<std::size_t>();
    plan.agent = j.at("agent").get<bool>();
    plan.memory_mib = j.at("memory_mib").get<unsigned>();
    plan.qemu_version = j.at("qemu_version").get<std::string>();
    if (auto bytes = j.at("memory_limit_bytes").get<std::uint64_t>())
      plan.limits.memory_bytes = bytes;
    if (auto pids = j.at("pids_limit").get<std::uint64_t>()) plan.limits.pids = pids;
    // Absent from the folders of VMs made before snapshots.
    if (j.value("memory_file", false)) plan.memory = GuestMemory::kPrivateFile;
    plan.snapshot = j.value("snapshot", std::string());
  } catch (const std::exception& e) {
    Fail(ErrorCode::kFailedPrecondition, "{} does not say how to start the VM again: {}",
         dir.metadata().string(), e.what());
  }
  if (plan.argv.empty() || plan.guest_files > 32) {
    Fail(ErrorCode::kFailedPrecondition, "{} has no usable QEMU command line",
         dir.metadata().string());
  }
  return plan;
}

void QemuDriver::ForgetProcess(const SandboxId& id, const VmDir& dir) {
  consoles_.Detach(id);
  try {
    if (options_.cgroups) options_.cgroups->Remove(CgroupName(id));
  } catch (const Error& e) {
    spdlog::warn("vm {}: its cgroup stays for now: {}", id.str(), e.what());
  }
  {
    std::lock_guard lock(mutex_);
    processes_.erase(id);
  }
  std::error_code ec;
  fs::remove(dir.pidfile(), ec);
}

void QemuDriver::FinishInterruptedMove(const SandboxId& id, const VmDir& dir) {
  std::error_code ec;
  fs::remove(dir.saved_state_partial(), ec);
  QmpClient qmp = QmpClient::Connect(dir.qmp_socket(), 5s);
  const std::string status = qmp.Execute("query-status").value("status", std::string());
  if (status == "running") return;
  // Only a pause or a resume stops a VM: the daemon died in one. With its
  // whole state saved, the VM is paused (its QEMU goes); otherwise it runs
  // on where it was.
  if (fs::exists(dir.saved_state(), ec)) {
    spdlog::info("vm {}: its state was saved by an unfinished pause or resume ({}); ending it",
                 id.str(), status);
    if (auto process = Process(id, dir)) {
      process->Kill();
      process->WaitExit(10s);
    }
    ForgetProcess(id, dir);
    return;
  }
  spdlog::info("vm {}: stopped by an unfinished pause ({}); continuing it", id.str(), status);
  try {
    qmp.CancelMigration(10s);
  } catch (const Error& e) {
    spdlog::warn("vm {}: {}", id.str(), e.what());
  }
  qmp.Execute("cont");
}

std::chrono::milliseconds QemuDriver::MigrationTimeout(const LaunchPlan& plan) {
  // 30 s, and a second for each 32 MiB of guest memory (a slow disk).
  return std::chrono::milliseconds(30000 + std::uint64_t{plan.memory_mib} * 1000 / 32);
}

std::optional<QemuDriver::Identity> QemuDriver::IdentityOf(const SandboxId& id) {
  if (!options_.vm.unprivileged) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto slot = slots_.find(id);
  if (slot == slots_.end())
    Fail(ErrorCode::kFailedPrecondition, "VM {} has no uid of its own", id.str());
  const auto uid = static_cast<uid_t>(options_.vm.uid_base + slot->second);
  return Identity{uid, static_cast<gid_t>(uid)};
}

void QemuDriver::Pause(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  auto process = Process(id, dir);
  if (!process || !process->Alive()) {
    Fail(ErrorCode::kFailedPrecondition, "VM {} is not running", id.str());
  }
  // What a resume will need, checked before anything stops: a VM that
  // could not be started again must not be saved.
  const LaunchPlan plan = ReadLaunchPlan(dir);
  IdentityOf(id);
  if (plan.qemu_version != qemu_version_) {
    Fail(ErrorCode::kFailedPrecondition,
         "VM {} runs QEMU '{}', this daemon starts '{}': its state could not be restored", id.str(),
         plan.qemu_version, qemu_version_);
  }
  const auto t0 = std::chrono::steady_clock::now();
  QmpClient qmp = QmpClient::Connect(dir.qmp_socket(), 5s);
  qmp.Execute("stop");
  std::uint64_t bytes = 0;
  try {
    UniqueFd file = OpenFile(dir.saved_state_partial(), O_WRONLY | O_CREAT | O_TRUNC);
    qmp.PassFd("pause", file.get());
    // QEMU throttles migration to 128 MiB/s by default, even of a stopped VM.
    qmp.Execute("migrate-set-parameters", {{"max-bandwidth", std::uint64_t{1} << 33}});
    // All of its memory: a VM restored from a snapshot still has this set.
    qmp.SetMigrationCapability("x-ignore-shared", false);
    qmp.Migrate("migrate", {{"uri", "fd:pause"}}, MigrationTimeout(plan));
    // On disk before QEMU goes: a crash now must not lose the machine.
    if (::fsync(file.get()) != 0) {
      FailErrno("cannot write the saved state", errno,
                errno == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kInternal);
    }
    struct stat st {};
    if (::fstat(file.get(), &st) == 0) bytes = static_cast<std::uint64_t>(st.st_size);
    file.reset();
    fs::rename(dir.saved_state_partial(), dir.saved_state());
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(dir.saved_state_partial(), ec);
    try {
      // A migration still under way would stop the guest again when it
      // ends: cancel it first.
      qmp.CancelMigration(10s);
      qmp.Execute("cont");
    } catch (const Error& again) {
      spdlog::error("vm {}: cannot continue it after a failed pause: {}", id.str(), again.what());
    }
    const std::string why = e.what();
    const bool full = why.find("No space left") != std::string::npos ||
                      why.find("Disk quota") != std::string::npos;
    Fail(full ? ErrorCode::kNoSpace : ErrorCode::kFailedPrecondition,
         "cannot pause VM {} ({}); it runs on", id.str(), why);
  }
  try {
    qmp.Execute("quit");
  } catch (const Error&) {
    // QEMU may close the connection before it answers.
  }
  if (!process->WaitExit(10s)) {
    process->Kill();
    process->WaitExit(10s);
  }
  // Saved and ended: the rest is cleanup (the pause itself succeeded).
  ForgetProcess(id, dir);
  spdlog::info(
      "vm {}: paused ({} MiB of state saved in {} ms)", id.str(), bytes >> 20,
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count());
}

VmInfo QemuDriver::Resume(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  if (auto process = Process(id, dir); process && process->Alive()) {
    Fail(ErrorCode::kFailedPrecondition, "VM {} is running, not paused", id.str());
  }
  std::error_code ec;
  if (!fs::exists(dir.saved_state(), ec)) {
    Fail(ErrorCode::kFailedPrecondition, "VM {} has no saved state to resume", id.str());
  }
  const auto t0 = std::chrono::steady_clock::now();
  LaunchPlan plan = ReadLaunchPlan(dir);
  if (plan.qemu_version != qemu_version_) {
    Fail(ErrorCode::kFailedPrecondition,
         "VM {} was saved by QEMU '{}'; this one is '{}' and cannot restore it", id.str(),
         plan.qemu_version, qemu_version_);
  }
  std::optional<Identity> as = IdentityOf(id);
  UniqueFd state = OpenFile(dir.saved_state(), O_RDONLY);
  UniqueFd memory;
  if (plan.memory != GuestMemory::kAnonymous) memory = MemoryForResume(plan.snapshot);
  try {
    Launch(id, dir, plan, as,
           {.incoming_state = state.get(),
            .restore_timeout = MigrationTimeout(plan),
            .memory = memory.get()});
  } catch (const Error&) {
    // The saved state stays for another try; the QEMU that failed goes.
    if (auto failed = Process(id, dir)) {
      failed->Kill();
      failed->WaitExit(10s);
    }
    ForgetProcess(id, dir);
    throw;
  }
  if (!fs::remove(dir.saved_state(), ec) && ec) {
    spdlog::warn("vm {}: resumed, but its saved state stays: {}", id.str(), ec.message());
  }
  spdlog::info(
      "vm {}: resumed in {} ms", id.str(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  try {
    return Inspect(id);
  } catch (const Error& e) {
    spdlog::warn("vm {}: resumed, but cannot be inspected now: {}", id.str(), e.what());
    VmInfo info{id, VmState::kRunning, 0, dir.root, dir.serial_log()};
    if (plan.agent) info.agent_socket = dir.agent_socket();
    return info;
  }
}

std::shared_ptr<TrackedProcess> QemuDriver::Process(const SandboxId& id, const VmDir& dir) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = processes_.find(id); it != processes_.end()) return it->second;
  }
  auto found = TrackedProcess::Find(dir.pidfile(), QemuProcessMarker(id));
  if (!found) return nullptr;
  auto process = std::make_shared<TrackedProcess>(std::move(*found));
  std::lock_guard lock(mutex_);
  return processes_.emplace(id, process).first->second;
}

std::optional<ResourceUsage> QemuDriver::Usage(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  auto process = Process(id, dir);
  if (!process || !process->Alive()) return std::nullopt;
  // The cgroup counts QEMU's threads and its helpers; without one, QEMU
  // alone. Never one then the other: the CPU counter would seem to reset.
  if (options_.cgroups) {
    CgroupUsage u = options_.cgroups->Usage(CgroupName(id));
    return ResourceUsage{static_cast<double>(u.cpu_usec) / 1e6, u.memory_bytes};
  }
  return UsageOfProcess(process->pid());
}

VmInfo QemuDriver::Inspect(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  std::error_code ec;
  if (!fs::is_directory(dir.root, ec)) {
    if (ec && ec != std::errc::no_such_file_or_directory) {
      Fail(ErrorCode::kUnavailable, "cannot check VM {}: {}", id.str(), ec.message());
    }
    Fail(ErrorCode::kNotFound, "no VM with id {}", id.str());
  }
  VmInfo info{id, VmState::kShutoff, 0, dir.root, dir.serial_log()};
  if (fs::exists(dir.agent_socket(), ec)) info.agent_socket = dir.agent_socket();
  auto process = Process(id, dir);
  if (!process || !process->Alive()) {
    if (fs::exists(dir.saved_state(), ec)) info.state = VmState::kSaved;
    return info;
  }
  info.pid = process->pid();
  info.state = VmState::kRunning;
  try {
    auto status = QmpClient::Connect(dir.qmp_socket(), 2s).Execute("query-status");
    if (status.value("status", std::string()) == "paused") info.state = VmState::kPaused;
  } catch (const Error&) {
    // The process may be exiting; its liveness is the authority.
    if (!process->Alive()) info.state = VmState::kShutoff;
  }
  return info;
}

bool QemuDriver::Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) {
  VmDir dir = VmDir::For(vms_dir(), id);
  auto process = Process(id, dir);
  if (!process || !process->Alive()) return true;
  try {
    QmpClient::Connect(dir.qmp_socket(), 2s).Execute("system_powerdown");
  } catch (const Error& e) {
    if (!process->Alive()) return true;
    spdlog::warn("vm {}: system_powerdown failed: {}", id.str(), e.what());
    return false;
  }
  return process->WaitExit(timeout);
}

void QemuDriver::Destroy(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  // Throws when the process cannot be checked: then nothing is removed, so
  // a running QEMU is never left without its folder.
  if (auto process = Process(id, dir)) {
    // A hard stop: the disk is thrown away, so nothing needs flushing.
    process->Kill();
    if (!process->WaitExit(10s)) {
      Fail(ErrorCode::kInternal, "QEMU pid {} of VM {} did not exit after SIGKILL", process->pid(),
           id.str());
    }
  }
  consoles_.Detach(id);
  if (options_.cgroups) options_.cgroups->Remove(CgroupName(id));
  RemoveAll(dir.root);
  {
    std::lock_guard lock(mutex_);
    processes_.erase(id);
  }
  ReleaseIdentity(id);
  CollectSnapshots();  // its template's disk, if nothing else uses it
}

std::vector<SandboxId> QemuDriver::List() {
  std::vector<SandboxId> ids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(vms_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && SandboxId::IsValid(name)) ids.push_back(SandboxId::Parse(name));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace ephemera

// Snapshot templates of the qemu driver. A template is a VM booted once to
// the point where its agent waits for an identity, then saved with QEMU's
// migration: its RAM stays in a memfd the daemon holds (x-ignore-shared
// leaves it out of the stream), its devices in a small state file, its disk
// as the read-only backing file of its clones' overlays. A clone is a new
// QEMU that maps the memfd privately (copy-on-write: clones share the
// template's pages until they write them) and loads the device state.
//
// The memfd is sealed against writes before any clone maps it: QEMU 7.2
// opens a memory file read-write even for a private mapping, and a clone's
// QEMU must not be able to change what later clones start from.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/sha256.h"
#include "core/subprocess.h"
#include "vm/qemu/memory_file.h"
#include "vm/qemu/qemu_driver.h"
#include "vm/qemu/qmp.h"

namespace ephemera {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kSaveTimeout = 60s;
constexpr auto kRestoreTimeout = 30s;
constexpr std::string_view kBuildSuffix = ".part";

long long MillisSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

std::uint64_t DiskVirtualSize(const fs::path& qemu_img, const fs::path& disk) {
  ProcessResult r = RunProcess({qemu_img.string(), "info", "--output=json", disk.string()}, 30s);
  try {
    if (r.ok()) return nlohmann::json::parse(r.out).at("virtual-size").get<std::uint64_t>();
  } catch (const std::exception&) {
  }
  Fail(ErrorCode::kInternal, "qemu-img info {} gave no size: {}", disk.string(), r.err);
}

}  // namespace

QemuDriver::~QemuDriver() {
  {
    std::lock_guard lock(mutex_);
    snapshots_.clear();
  }
  try {
    CollectSnapshots();
  } catch (const std::exception& e) {
    spdlog::warn("snapshots: {}", e.what());
  }
}

std::string QemuDriver::QemuStamp() const {
  // A package upgrade replaces the binary: another inode or time.
  struct stat st {};
  if (::stat(qemu_binary_.c_str(), &st) != 0) return "missing";
  return fmt::format("{} {} {}.{} {}", qemu_version_, st.st_ino, st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec, st.st_size);
}

std::string QemuDriver::SnapshotKey(const VmSpec& spec) const {
  // Everything a migration stream must match: the guest, its machine, the build.
  const Image& image = spec.image;
  std::string files;
  for (const ImageFile* file : image.BootFiles()) files += file->sha256 + " ";
  return Sha256Hex(fmt::format("{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}", image.name,
                               image.version, files, image.cmdline, spec.memory_mib, spec.vcpus,
                               MachineTypeName(options_.vm.machine),
                               AccelName(options_.accel.accel), TbSizeFor(spec),
                               tsc_khz_.value_or(0), qemu_version_))
      .substr(0, 16);
}

void QemuDriver::BuildSnapshot(const VmSpec& requested,
                               const std::function<void(const VmInfo&)>& ready) {
  if (requested.image.format != ImageFormat::kKernel || !requested.agent_channel) {
    Fail(ErrorCode::kInvalidArgument, "only a kernel image's VM with its agent makes a snapshot");
  }
  const auto t0 = Clock::now();
  VmSpec spec = requested;
  // A NIC like its clones' (their device state must match) on a TAP that
  // reaches nothing and vanishes with its descriptor.
  std::string tap_name;
  UniqueFd tap = OpenScratchTap(&tap_name);
  spec.nic = NicSpec{tap_name, requested.nic ? requested.nic->mac : "02:00:00:00:00:01"};
  Validate(spec);
  const std::string key = SnapshotKey(spec);
  const std::string name = key + "-" + spec.id.ShortName();
  const VmDir dir{snapshots_dir() / (name + std::string(kBuildSuffix))};
  {
    std::lock_guard lock(mutex_);
    snapshots_building_.insert(dir.root.filename().string());
  }
  struct Building {
    QemuDriver* driver;
    std::string name;
    ~Building() {
      std::lock_guard lock(driver->mutex_);
      driver->snapshots_building_.erase(name);
    }
  } building{this, dir.root.filename().string()};
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->key = key;
  snapshot->name = name;
  snapshot->qemu_stamp = QemuStamp();
  std::uint64_t state_bytes = 0;
  try {
    MakeDirs(dir.root, 0700);
    std::optional<Identity> as = TakeIdentity(spec.id);
    snapshot->memory = MakeMemoryFile(spec.memory_mib);
    LaunchPlan plan = PlanLaunch(spec, dir, GuestMemory::kSharedFile);
    CreateFiles(spec, dir, as, plan);
    Launch(spec.id, dir, plan, as, {.memory = snapshot->memory.get(), .tap = tap.get()});
    VmInfo info{spec.id, VmState::kRunning, 0, dir.root, dir.serial_log(), dir.agent_socket()};
    ready(info);

    QmpClient qmp = QmpClient::Connect(dir.qmp_socket(), 5s);
    qmp.Execute("stop");
    qmp.SetMigrationCapability("x-ignore-shared", true);
    qmp.Execute("migrate-set-parameters", {{"max-bandwidth", std::uint64_t{1} << 33}});
    UniqueFd state = OpenFile(dir.saved_state(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    qmp.PassFd("snapshot", state.get());
    qmp.Migrate("migrate", {{"uri", "fd:snapshot"}}, kSaveTimeout);
    struct stat st {};
    if (::fstat(state.get(), &st) == 0) state_bytes = static_cast<std::uint64_t>(st.st_size);
    try {
      qmp.Execute("quit");
    } catch (const Error&) {
      // QEMU may close the connection before it answers.
    }
    auto process = Process(spec.id, dir);
    if (process && !process->WaitExit(10s)) {
      process->Kill();
      process->WaitExit(10s);
    }
    ForgetProcess(spec.id, dir);
    ReleaseIdentity(spec.id);
    FillMemoryFile(snapshot->memory.get());
    // Nobody maps it shared any more: from now on nobody can write it.
    SealMemoryFile(snapshot->memory.get());
    // From now on only read, as its clones' backing file.
    if (::chmod(dir.overlay().c_str(), 0400) != 0)
      FailErrno("cannot make the disk read-only", errno);
    snapshot->disk_bytes = DiskVirtualSize(qemu_img_binary_, dir.overlay());
    for (std::size_t i = 0; i < spec.guest_files.size(); ++i) RemoveAll(dir.guest_file(i));
    for (const fs::path& socket : {dir.qmp_socket(), dir.console_socket(), dir.agent_socket()}) {
      RemoveAll(socket);
    }
    WriteFileAtomic(dir.root / "manifest.json",
                    nlohmann::json{{"key", key},
                                   {"image", spec.image.name},
                                   {"image_sha256", spec.image.PrimarySha256()},
                                   {"memory_mib", spec.memory_mib},
                                   {"vcpus", spec.vcpus},
                                   {"qemu_version", qemu_version_},
                                   {"qemu_stamp", snapshot->qemu_stamp},
                                   {"created_at", std::time(nullptr)}}
                            .dump(2) +
                        "\n");
    {
      // Kept from here on: a collection must not take it between rename and publication.
      std::lock_guard lock(mutex_);
      snapshots_held_[name] = snapshot;
    }
    fs::rename(dir.root, snapshots_dir() / name);
  } catch (...) {
    if (auto process = Process(spec.id, dir)) {
      process->Kill();
      process->WaitExit(10s);
    }
    ForgetProcess(spec.id, dir);
    ReleaseIdentity(spec.id);
    RemoveAll(dir.root);
    throw;
  }
  struct stat memory {};
  ::fstat(snapshot->memory.get(), &memory);
  {
    std::lock_guard lock(mutex_);
    snapshots_[key] = snapshot;
  }
  spdlog::info(
      "snapshot {}: image {} ({} MiB, {} vCPU) saved in {} ms: {} KiB of device state, {} MiB "
      "of memory",
      name, spec.image.name, spec.memory_mib, spec.vcpus, MillisSince(t0), state_bytes >> 10,
      (static_cast<std::uint64_t>(memory.st_blocks) * 512) >> 20);
  CollectSnapshots();  // the one it replaced, if nothing uses it
}

std::optional<VmInfo> QemuDriver::StartFromSnapshot(const VmSpec& spec) {
  const std::string key = SnapshotKey(spec);
  std::shared_ptr<Snapshot> snapshot;
  {
    std::lock_guard lock(mutex_);
    if (auto it = snapshots_.find(key); it != snapshots_.end()) snapshot = it->second;
  }
  if (!snapshot) return std::nullopt;
  if (snapshot->qemu_stamp != QemuStamp()) {
    DropSnapshot(key, "QEMU changed since it was made");
    return std::nullopt;
  }
  const auto t0 = Clock::now();
  for (int attempt = 1;; ++attempt) {
    bool reset_controllers = false;
    try {
      return StartWith(spec, [&](const VmDir& dir) {
        std::optional<Identity> as = TakeIdentity(spec.id);
        LaunchPlan plan = PlanLaunch(spec, dir, GuestMemory::kPrivateFile, snapshot->name);
        CreateFiles(spec, dir, as, plan, snapshot->disk_bytes);
        UniqueFd state = OpenFile(VmDir{snapshots_dir() / snapshot->name}.saved_state(), O_RDONLY);
        Launch(spec.id, dir, plan, as,
               {.incoming_state = state.get(),
                .restore_timeout = kRestoreTimeout,
                .ignore_shared = true,
                .memory = snapshot->memory.get()});
        // Now and then (about one restore in twenty under TCG here) a clone
        // comes up with its interrupt controllers in their reset state: its
        // guest would wait for an interrupt forever. Its APIC tells.
        const std::string lapic =
            QmpClient::Connect(dir.qmp_socket(), 5s)
                .Execute("human-monitor-command", {{"command-line", "info lapic"}})
                .get<std::string>();
        if (lapic.find("APIC enabled") == std::string::npos) {
          reset_controllers = true;
          Fail(ErrorCode::kInternal, "VM {} came up with its interrupt controllers reset",
               spec.id.str());
        }
        spdlog::info("vm {}: restored from snapshot {} in {} ms{}", spec.id.str(), snapshot->name,
                     MillisSince(t0), as ? fmt::format(", uid {}", as->uid) : std::string());
      });
    } catch (const Error& e) {
      if (reset_controllers && attempt == 1) {
        spdlog::warn("{}; restoring it again", e.what());
        continue;
      }
      // The host's shortage, not the template's fault: it stays.
      if (e.code() != ErrorCode::kResourceExhausted && e.code() != ErrorCode::kNoSpace) {
        DropSnapshot(key,
                     fmt::format("VM {} did not restore from it: {}", spec.id.str(), e.what()));
      }
      throw;
    } catch (const std::exception& e) {
      DropSnapshot(key, fmt::format("VM {} did not restore from it: {}", spec.id.str(), e.what()));
      throw;
    }
  }
}

void QemuDriver::DropSnapshot(const VmSpec& spec, const std::string& why) {
  DropSnapshot(SnapshotKey(spec), why);
}

void QemuDriver::DropSnapshot(const std::string& key, const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    auto it = snapshots_.find(key);
    if (it == snapshots_.end()) return;
    spdlog::warn("snapshot {}: dropped: {}", it->second->name, why);
    snapshots_.erase(it);
  }
  CollectSnapshots();
}

UniqueFd QemuDriver::MemoryForResume(const std::string& snapshot) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = snapshots_held_.find(snapshot); it != snapshots_held_.end()) {
      if (auto held = it->second.lock()) {
        UniqueFd copy(::fcntl(held->memory.get(), F_DUPFD_CLOEXEC, 0));
        if (!copy) FailErrno("cannot share the template's memory", errno);
        return copy;
      }
    }
  }
  // The saved state holds all of the guest's memory: plain RAM will do.
  return UniqueFd();
}

void QemuDriver::CollectSnapshots() {
  std::set<std::string> keep;
  {
    std::lock_guard lock(mutex_);
    for (auto it = snapshots_held_.begin(); it != snapshots_held_.end();) {
      if (it->second.expired()) {
        it = snapshots_held_.erase(it);
      } else {
        keep.insert(it->first);
        ++it;
      }
    }
    keep.insert(snapshots_building_.begin(), snapshots_building_.end());
  }
  std::vector<fs::path> unused;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(snapshots_dir(), ec)) {
    if (!keep.count(entry.path().filename().string())) unused.push_back(entry.path());
  }
  if (unused.empty()) return;
  // The disks of VMs made from a template are backed by its disk.
  for (const SandboxId& id : List()) {
    try {
      auto j = nlohmann::json::parse(ReadFile(VmDir::For(vms_dir(), id).metadata()));
      keep.insert(j.value("snapshot", std::string()));
    } catch (const std::exception&) {
      // Half made: it cannot have started from a template yet.
    }
  }
  for (const fs::path& path : unused) {
    const std::string name = path.filename().string();
    if (keep.count(name)) continue;
    try {
      if (name.ends_with(kBuildSuffix)) {
        // A build the daemon died in: its QEMU may still run.
        VmDir dir{path};
        auto j = nlohmann::json::parse(ReadFile(dir.metadata()));
        const SandboxId id = SandboxId::Parse(j.at("id").get<std::string>());
        if (auto process = TrackedProcess::Find(dir.pidfile(), QemuProcessMarker(id))) {
          process->Kill();
          process->WaitExit(10s);
        }
        if (options_.cgroups) options_.cgroups->Remove("vm-" + id.str());
      }
    } catch (const std::exception& e) {
      spdlog::debug("snapshot {}: {}", name, e.what());
    }
    try {
      RemoveAll(path);
      spdlog::info("snapshot {}: removed (nothing uses it)", name);
    } catch (const Error& e) {
      spdlog::warn("snapshot {}: cannot remove it: {}", name, e.what());
    }
  }
}

}  // namespace ephemera

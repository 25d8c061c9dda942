#include "container/container_driver.h"

#include "container/container_channel.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "container/mounts.h"
#include "container/runtime_spec.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "net/veth.h"

namespace ephemera {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kRecord[] = "container.json";
constexpr char kGuestPrefix[] = "opt/ephemera/";

// A hybrid host's cgroup v2 mount, which crun will not run beside.
std::vector<std::string> HiddenCgroupMounts(const Cgroups& cgroups) {
  if (cgroups.unified()) return {};
  struct statfs st {};
  if (::statfs("/sys/fs/cgroup/unified", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) {
    return {"/sys/fs/cgroup/unified"};
  }
  return {};
}

// The runtime sets up the root filesystem as the container's root, a host
// uid with no rights here: every folder above a container's must let
// others search it (not list it). Its own folder lets only its group in.
void CheckSearchable(const fs::path& root) {
  for (fs::path p = root; !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) FailErrno("cannot stat " + p.string(), errno);
    if (!(st.st_mode & S_IXOTH)) {
      Fail(ErrorCode::kUnavailable,
           "{} is mode {:04o}: containers need every folder above state_dir/containers "
           "searchable by others (o+x, as 0711)",
           p.string(), st.st_mode & 07777);
    }
    if (p == p.parent_path()) break;
  }
}

std::filesystem::path FindRuntime(const std::string& configured) {
  auto found = FindProgram(configured);
  if (!found) {
    Fail(ErrorCode::kUnavailable,
         "the OCI runtime '{}' is not installed (the Debian package crun, or runc)", configured);
  }
  return *found;
}

void WriteOwned(const fs::path& path, std::string_view content, unsigned mode, uid_t uid) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd) FailErrno("cannot create " + path.string(), errno);
  if (::fchown(fd.get(), uid, uid) != 0) FailErrno("cannot chown " + path.string(), errno);
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) FailErrno("cannot write " + path.string(), errno);
    done += static_cast<std::size_t>(n);
  }
}

// The guest contract's files where the container sees fw_cfg's layout:
// NAME/raw under opt/ephemera, owned by the container's root.
void WriteGuestFiles(const fs::path& dir, const std::vector<GuestFile>& files, uid_t root) {
  MakeDirs(dir, 0755);
  if (::chown(dir.c_str(), root, root) != 0) FailErrno("cannot chown " + dir.string(), errno);
  for (const GuestFile& f : files) {
    std::string name = f.name;
    if (name.rfind(kGuestPrefix, 0) != 0 || name.size() == sizeof kGuestPrefix - 1 ||
        name.find('/', sizeof kGuestPrefix - 1) != std::string::npos) {
      Fail(ErrorCode::kInvalidArgument, "guest file '{}' is not under {}", name, kGuestPrefix);
    }
    const fs::path sub = dir / name.substr(sizeof kGuestPrefix - 1);
    MakeDirs(sub, 0755);
    if (::chown(sub.c_str(), root, root) != 0) FailErrno("cannot chown " + sub.string(), errno);
    WriteOwned(sub / "raw", f.content, f.secret ? 0400 : 0444, root);
  }
}

}  // namespace

ContainerDriver::ContainerDriver(ContainerDriverOptions options)
    : options_(std::move(options)),
      root_(options_.state_dir / "containers"),
      images_(root_ / ".images", std::chrono::seconds(options_.config.image_idle_seconds)),
      consoles_(options_.console_log_bytes) {
  if (!options_.cgroups) {
    Fail(ErrorCode::kUnavailable, "containers need cgroups, and none could be used here");
  }
  // As for the libvirt driver: searchable, not listable.
  MakeDirs(root_, 0711);
  if (::chmod(options_.state_dir.c_str(), 0711) != 0 || ::chmod(root_.c_str(), 0711) != 0) {
    FailErrno("cannot make " + root_.string() + " searchable", errno);
  }
  CheckSearchable(root_);
  OciRuntimeOptions runtime;
  runtime.binary = FindRuntime(options_.config.runtime);
  is_crun_ = runtime.binary.filename() == "crun";
  runtime.state_root = root_ / ".runtime";
  runtime.hidden_mounts = HiddenCgroupMounts(*options_.cgroups);
  if (IsCrun()) {
    runtime.global_args = {"--cgroup-manager=disabled"};
  } else if (!options_.cgroups->unified()) {
    // runc joins one cgroup path in every hierarchy, and ours differ on a
    // v1 or hybrid host: its containers would escape their limits.
    Fail(ErrorCode::kUnavailable,
         "runc needs a cgroup v2 host (this one has v1 hierarchies); use container.runtime: crun");
  }
  runtime_ = std::make_unique<OciRuntime>(runtime);
  const auto& caps = DefaultContainerCapabilities();
  seccomp_ = options_.config.seccomp_profile.empty()
                 ? DefaultSeccompProfile(caps)
                 : LoadSeccompProfileFile(options_.config.seccomp_profile, caps);
  // A container's init is orphaned when the runtime exits: as a subreaper
  // the daemon gets it, reaps it the moment it ends and sees that at once.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) FailErrno("cannot become a child subreaper", errno);
  epoll_.reset(-1);
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) FailErrno("cannot make an eventfd", errno);
  Adopt();
  RemoveStrays();
  images_.Sweep();
  spdlog::info("containers: {} ({}), seccomp profile {} with {} rules, {} adopted",
               runtime_->binary().string(),
               runtime.hidden_mounts.empty() ? "cgroups as they are" : "hybrid cgroups hidden",
               options_.config.seccomp_profile.empty() ? std::string("built-in")
                                                       : options_.config.seccomp_profile.string(),
               seccomp_.rules, running_.size());
  watcher_ = std::thread([this] { Watch(); });
}

ContainerDriver::~ContainerDriver() {
  stopping_ = true;
  Wake();
  if (watcher_.joinable()) watcher_.join();
  // Images no container uses are unmounted; the others stay for adoption.
  images_.Sweep(true);
}

void ContainerDriver::OnStopped(std::function<void(const SandboxId&)> listener) {
  std::lock_guard lock(listener_mutex_);
  stopped_listener_ = std::move(listener);
}

void ContainerDriver::OnOutOfMemory(OutOfMemoryListener listener) {
  std::lock_guard lock(listener_mutex_);
  oom_listener_ = std::move(listener);
}

std::string ContainerDriver::Health() const { return "ok"; }

unsigned ContainerDriver::TakeSlot(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  std::set<unsigned> used;
  for (const auto& [other, slot] : slots_) used.insert(slot);
  for (unsigned slot = 0; slot < options_.max_containers; ++slot) {
    if (!used.count(slot)) {
      slots_[id] = slot;
      return slot;
    }
  }
  Fail(ErrorCode::kResourceExhausted, "all {} container uid ranges are in use",
       options_.max_containers);
}

void ContainerDriver::Wake() {
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void ContainerDriver::Track(const SandboxId& id, pid_t pid, std::uint64_t oom_kills_reported) {
  auto running = std::make_shared<Running>();
  running->oom_kills = oom_kills_reported;
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd) {
    running->init = TrackedProcess::Adopt(pid, std::move(pidfd));
  } else {
    if (errno != ESRCH) FailErrno(fmt::format("cannot track container {}", id.str()), errno);
    running->exited = true;
  }
  {
    std::lock_guard lock(mutex_);
    running_[id] = running;
  }
  Wake();
}

VmInfo ContainerDriver::Start(const VmSpec& spec) {
  if (!spec.image.rootfs || spec.image.rootfs_format != DiskFormat::kRaw) {
    Fail(ErrorCode::kInvalidArgument,
         "image '{}' has no ext4 root filesystem (rootfs.ext4) a container can use",
         spec.image.name);
  }
  if (!spec.nic || !spec.nic->subnet || spec.nic->tap.empty()) {
    Fail(ErrorCode::kInvalidArgument, "a container needs its veth end and /30");
  }
  const fs::path dir = DirOf(spec.id);
  if (fs::exists(dir)) Fail(ErrorCode::kAlreadyExists, "container {} exists", spec.id.str());
  const unsigned slot = TakeSlot(spec.id);
  try {
    Build(spec, slot);
  } catch (...) {
    DestroyAfterFailedStart(spec.id);
    throw;
  }
  return Inspect(spec.id);
}

void ContainerDriver::Build(const VmSpec& spec, unsigned slot) {
  const fs::path dir = DirOf(spec.id);
  const uid_t root = options_.config.uid_base + slot * kUidsPerContainer;
  MakeDirs(dir, 0710);
  if (::chown(dir.c_str(), 0, root) != 0)
    FailErrno("cannot give " + dir.string() + " its group", errno);
  const fs::path rootfs_file = spec.image.rootfs->path;
  // Recorded first: whatever follows, Destroy (now or after a crash) knows
  // what to undo.
  WriteFileAtomic(
      dir / kRecord,
      json{{"slot", slot}, {"host_uid", root}, {"image_rootfs", rootfs_file.string()}}.dump());
  const fs::path image_mount = images_.Acquire(rootfs_file);
  {
    std::lock_guard lock(mutex_);
    image_of_[spec.id] = rootfs_file;
  }
  for (const char* sub : {"lower", "upper", "rootfs", "bundle"}) MakeDirs(dir / sub, 0700);
  {
    UniqueFd userns = MakeUserNamespace(root, kUidsPerContainer);
    MountIdmapped(image_mount, dir / "lower", userns.get());
  }
  MountTmpfs(dir / "upper", options_.config.disk_mib, root, root);
  for (const char* sub : {"data", "work"}) {
    MakeDirs(dir / "upper" / sub, 0755);
    if (::chown((dir / "upper" / sub).c_str(), root, root) != 0) {
      FailErrno("cannot chown the upper layer", errno);
    }
  }
  MountOverlay(dir / "lower", dir / "upper" / "data", dir / "upper" / "work", dir / "rootfs");
  WriteGuestFiles(dir / "upper" / "guest", spec.guest_files, root);
  // The container's output goes through a pipe the console recorder
  // drains into console.log with its bound (a container must not fill the
  // host's disk). The pipe is the container root's, so that its init can
  // reopen its output as /dev/console.
  auto [console_read, console] = MakePipe();
  if (::fchown(console.get(), root, root) != 0) FailErrno("cannot chown the console pipe", errno);

  RuntimeSpecInput in;
  in.hostname = "sandbox-" + spec.id.str().substr(0, 8);
  in.rootfs = dir / "rootfs";
  in.host_uid = root;
  in.uid_count = kUidsPerContainer;
  in.guest_files = dir / "upper" / "guest";
  in.capabilities = DefaultContainerCapabilities();
  in.seccomp = seccomp_.oci;
  if (IsCrun()) {
    in.seccomp_bpf_base64 = seccomp_.bpf_base64;
  } else {
    in.cgroups_path = "/" + (options_.cgroups->bases().front() / CgroupName(spec.id))
                                .lexically_relative("/sys/fs/cgroup")
                                .string();
  }
  WriteFileAtomic(dir / "bundle" / "config.json", BuildRuntimeSpec(in).dump(), 0600);

  CgroupLimits limits;
  limits.memory_bytes = std::uint64_t{spec.memory_mib} << 20;
  limits.pids = options_.config.max_pids;
  limits.cpus = spec.vcpus;
  limits.io_weight = options_.config.io_weight;
  const auto procs = options_.cgroups->Create(CgroupName(spec.id), limits);

  const pid_t pid =
      runtime_->Create(spec.id.str(), dir / "bundle", console.get(), console_read.get(), procs);
  Track(spec.id, pid);
  console.reset();  // the container holds the write end now
  consoles_.AttachSource(spec.id, std::move(console_read), dir / "console.log");
  // The network, before init runs: a veth pair whose container end is
  // made inside the namespace the runtime made, as eth0 with the guest's
  // address (made there, not moved: a move costs tens of ms).
  UniqueFd netns = OpenNetworkNamespace(pid);
  const Subnet30& subnet = *spec.nic->subnet;
  CreateContainerLink(spec.nic->tap, netns.get(), "eth0", spec.nic->mac, subnet.guest(),
                      subnet.gateway());
  runtime_->Start(spec.id.str());
}

VmInfo ContainerDriver::Inspect(const SandboxId& id) {
  const fs::path dir = DirOf(id);
  if (!fs::exists(dir / kRecord)) Fail(ErrorCode::kNotFound, "no container {}", id.str());
  VmInfo info{id};
  info.dir = dir;
  info.serial_log = dir / "console.log";
  std::shared_ptr<Running> running;
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(id);
    if (it != running_.end()) running = it->second;
  }
  if (running && !running->exited && running->init) {
    info.state = running->init->Alive() ? VmState::kRunning : VmState::kShutoff;
    info.pid = running->init->pid();
  }
  return info;
}

std::optional<ResourceUsage> ContainerDriver::Usage(const SandboxId& id) {
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(id);
    if (it == running_.end() || it->second->exited) return std::nullopt;
  }
  CgroupUsage u = options_.cgroups->Usage(CgroupName(id));
  return ResourceUsage{static_cast<double>(u.cpu_usec) / 1e6, u.memory_bytes};
}

std::shared_ptr<GuestChannel> ContainerDriver::ChannelTo(const SandboxId& id) {
  ContainerAccess access;
  {
    std::lock_guard lock(mutex_);
    auto running = running_.find(id);
    auto slot = slots_.find(id);
    if (running == running_.end() || running->second->exited || !running->second->init ||
        slot == slots_.end()) {
      Fail(ErrorCode::kFailedPrecondition, "container {} is not running", id.str());
    }
    access.init = running->second->init->pid();
    access.init_pidfd =
        std::make_shared<UniqueFd>(::fcntl(running->second->init->pidfd(), F_DUPFD_CLOEXEC, 0));
    access.host_root = options_.config.uid_base + slot->second * kUidsPerContainer;
  }
  access.id = id.str();
  std::error_code ec;
  access.pid_namespace = fs::read_symlink(fmt::format("/proc/{}/ns/pid", access.init), ec);
  if (ec || !*access.init_pidfd) {
    Fail(ErrorCode::kFailedPrecondition, "container {} is not running", id.str());
  }
  access.bundle = DirOf(id) / "bundle";
  access.scratch = DirOf(id) / "exec";
  MakeDirs(access.scratch, 0700);
  access.cgroups = options_.cgroups;
  access.cgroup = CgroupName(id);
  return std::make_shared<ContainerChannel>(*runtime_, std::move(access));
}

bool ContainerDriver::WaitExited(const SandboxId& id, std::chrono::milliseconds timeout) {
  std::shared_ptr<Running> running;
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(id);
    if (it == running_.end()) return true;
    running = it->second;
  }
  // Also reaps it, should the watcher not have got to it yet.
  return !running->init || running->init->WaitExit(timeout);
}

bool ContainerDriver::Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) {
  if (Inspect(id).state != VmState::kRunning) return true;
  runtime_->Kill(id.str(), SIGTERM);
  return WaitExited(id, timeout);
}

void ContainerDriver::Destroy(const SandboxId& id) {
  const fs::path dir = DirOf(id);
  const std::string name = id.str();
  // The runtime kills the init (and so the whole pid namespace) and
  // forgets the container; waiting for the init reaps it.
  runtime_->Delete(name);
  if (!WaitExited(id, std::chrono::seconds(10))) {
    spdlog::warn("container {}: still running 10 s after it was killed", name);
  }
  consoles_.Detach(id);
  options_.cgroups->Remove(CgroupName(id));  // whatever escaped the namespace
  for (const fs::path& mount : MountsUnder(dir)) Unmount(mount);
  RemoveAll(dir);
  std::optional<fs::path> image;
  {
    std::lock_guard lock(mutex_);
    running_.erase(id);
    slots_.erase(id);
    auto it = image_of_.find(id);
    if (it != image_of_.end()) {
      image = it->second;
      image_of_.erase(it);
    }
  }
  if (image) images_.Release(*image);
  Wake();
}

std::vector<SandboxId> ContainerDriver::List() {
  std::set<SandboxId> ids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (SandboxId::IsValid(name)) ids.insert(SandboxId::Parse(name));
  }
  for (const std::string& name : runtime_->List()) {
    if (SandboxId::IsValid(name)) ids.insert(SandboxId::Parse(name));
  }
  return {ids.begin(), ids.end()};
}

void ContainerDriver::Adopt() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!SandboxId::IsValid(name)) continue;
    const std::optional<SandboxId> id = SandboxId::Parse(name);
    json record;
    try {
      record = json::parse(ReadFile(entry.path() / kRecord));
      const unsigned slot = record.at("slot").get<unsigned>();
      const auto host_uid = record.at("host_uid").get<std::uint64_t>();
      if (host_uid != std::uint64_t{options_.config.uid_base} + slot * kUidsPerContainer) {
        // container.uid_base changed: its range is no slot of ours now, so
        // it is not kept (the engine destroys it as gone).
        spdlog::warn("container {}: its uid range ({}) is not slot {} of uid_base {}; not adopted",
                     id->str(), host_uid, slot, options_.config.uid_base);
        continue;
      }
      std::lock_guard lock(mutex_);
      slots_[*id] = slot;
    } catch (const std::exception& e) {
      // Half made when the daemon stopped: the engine's reconcile destroys it.
      spdlog::warn("container {}: no usable record ({}); left for reconcile", id->str(), e.what());
      continue;
    }
    const fs::path image = record.at("image_rootfs").get<std::string>();
    if (!MountsUnder(entry.path() / "rootfs").empty()) {
      try {
        images_.Acquire(image);
        std::lock_guard lock(mutex_);
        image_of_[*id] = image;
      } catch (const Error& e) {
        // Its rootfs keeps the old mount alive; the count just lacks it.
        spdlog::warn("container {}: its image cannot be mounted again: {}", id->str(), e.what());
      }
    }
    auto state = runtime_->State(id->str());
    if (state && state->pid > 0 && state->status != "stopped") {
      // Its earlier OOM kills were reported by the daemon before this one.
      std::uint64_t kills = 0;
      try {
        kills = options_.cgroups->Usage(CgroupName(*id)).oom_kills;
      } catch (const Error&) {
      }
      Track(*id, state->pid, kills);
    } else {
      auto gone = std::make_shared<Running>();
      gone->exited = true;
      std::lock_guard lock(mutex_);
      running_[*id] = gone;
    }
  }
}

void ContainerDriver::RemoveStrays() {
  std::set<std::string> known;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    known.insert(entry.path().filename().string());
  }
  for (const std::string& name : runtime_->List()) {
    if (known.count(name)) continue;
    try {
      runtime_->Delete(name);
      spdlog::info("containers: removed runtime container {} that no folder records", name);
    } catch (const Error& e) {
      spdlog::warn("containers: cannot remove runtime container {}: {}", name, e.what());
    }
  }
  for (const std::string& cgroup : options_.cgroups->List()) {
    if (cgroup.rfind("ct-", 0) != 0 || known.count(cgroup.substr(3))) continue;
    try {
      options_.cgroups->Remove(cgroup);
      spdlog::info("containers: removed cgroup {} that no container owns", cgroup);
    } catch (const Error& e) {
      spdlog::warn("containers: cannot remove cgroup {}: {}", cgroup, e.what());
    }
  }
}

std::vector<std::pair<SandboxId, std::shared_ptr<ContainerDriver::Running>>>
ContainerDriver::Watched() const {
  std::vector<std::pair<SandboxId, std::shared_ptr<Running>>> watched;
  std::lock_guard lock(mutex_);
  for (const auto& [id, r] : running_) {
    if (!r->exited && r->init) watched.emplace_back(id, r);
  }
  return watched;
}

void ContainerDriver::ReportOomKills() {
  for (auto& [id, r] : Watched()) {
    std::uint64_t kills = 0;
    try {
      kills = options_.cgroups->Usage(CgroupName(id)).oom_kills;
    } catch (const Error&) {
      continue;  // being destroyed
    }
    if (kills <= r->oom_kills) continue;
    spdlog::warn("container {}: out of memory: the OOM killer ended {} process(es) inside",
                 id.str(), kills - r->oom_kills);
    {
      std::lock_guard lock(listener_mutex_);
      if (oom_listener_) oom_listener_(id, kills - r->oom_kills);
    }
    r->oom_kills = kills;
  }
}

void ContainerDriver::Watch() {
  auto last_sweep = std::chrono::steady_clock::now();
  while (!stopping_) {
    const auto watched = Watched();
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    for (const auto& [id, r] : watched) fds.push_back({r->init->pidfd(), POLLIN, 0});
    const int ready = ::poll(fds.data(), fds.size(), 1000);
    if (ready < 0 && errno != EINTR) {
      spdlog::error("containers: watcher poll failed: {}", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (fds[0].revents & POLLIN) {
      std::uint64_t count;
      (void)!::read(wake_.get(), &count, sizeof count);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      const auto& [id, r] = watched[i - 1];
      // Reaped here if it is the daemon's child (it is unless adopted
      // after a restart, when its new parent reaps it).
      r->init->WaitExit(std::chrono::milliseconds(0));
      r->exited = true;
      spdlog::info("container {}: its init (pid {}) exited", id.str(), r->init->pid());
      std::lock_guard lock(listener_mutex_);
      if (stopped_listener_) stopped_listener_(id);
    }
    if (std::chrono::steady_clock::now() - last_sweep >= std::chrono::seconds(1)) {
      ReportOomKills();
      images_.Sweep();
      last_sweep = std::chrono::steady_clock::now();
    }
  }
}

}  // namespace ephemera

// The container driver: sandboxes of kind "container", behind the same
// interface as the VM drivers. Each container is an OCI runtime container
// (crun by default) with its own user namespace (a 65536-uid host range per
// sandbox), pid, network, mount, uts, ipc and cgroup namespaces, a cgroup
// with memory, pids, CPU and I/O limits, the field's default capabilities
// and seccomp profile, on an overlay of its image's rootfs (read-only,
// idmapped) and a size-bounded tmpfs. Its network is the veth pair the
// engine made, moved in before init runs. The daemon is a child subreaper,
// so a container's init is its child once the runtime has exited: its exit
// is seen at once through its pidfd.
//
// On the host, per container: state_dir/containers/<id>/ (container.json,
// bundle/config.json, the mounts lower/, upper/, rootfs/, the guest files,
// console.log), the runtime's record under containers/.runtime, and the
// cgroup "ct-<id>". Images' read-only mounts live in containers/.images.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "config/config.h"
#include "container/image_mounts.h"
#include "container/oci_runtime.h"
#include "container/seccomp_profile.h"
#include "core/cgroup.h"
#include "core/tracked_process.h"
#include "core/unique_fd.h"
#include "vm/console_recorder.h"
#include "vm/driver.h"

namespace ephemera {

struct ContainerDriverOptions {
  std::filesystem::path state_dir;
  ContainerConfig config;
  unsigned max_containers = 16;  // uid ranges: one per container
  // Where container cgroups are made; required (limits are the point).
  std::shared_ptr<const Cgroups> cgroups;
  // What a container's console log (and its one predecessor) may hold.
  std::size_t console_log_bytes = 1 << 20;
};

class ContainerDriver : public VmDriver {
 public:
  // Finds the runtime, loads the seccomp profile, adopts the containers an
  // earlier run left and removes what no container owns any more.
  // kUnavailable naming what is missing.
  explicit ContainerDriver(ContainerDriverOptions options);
  ~ContainerDriver() override;

  std::string_view name() const override { return "container"; }
  LinkMode link_mode() const override { return LinkMode::kVeth; }
  bool passes_secret_files() const override { return true; }
  void OnStopped(std::function<void(const SandboxId&)> listener) override;
  void OnOutOfMemory(OutOfMemoryListener listener) override;
  std::string Health() const override;

  VmInfo Start(const VmSpec& spec) override;
  VmInfo Inspect(const SandboxId& id) override;
  std::optional<ResourceUsage> Usage(const SandboxId& id) override;
  // Programs through the runtime's exec, files through the container's
  // root (container_channel.h). kFailedPrecondition when it is not running.
  std::shared_ptr<GuestChannel> ChannelTo(const SandboxId& id) override;
  // SIGTERM to the container's init (sshd), which ends the container.
  bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) override;
  void Destroy(const SandboxId& id) override;
  std::vector<SandboxId> List() override;

  static constexpr unsigned kUidsPerContainer = 65536;
  static std::string CgroupName(const SandboxId& id) { return "ct-" + id.str(); }

 private:
  struct Running {
    // Its init, by pidfd (waits on it reap it when it is the daemon's
    // child); none: it had ended before it could be tracked.
    std::optional<TrackedProcess> init;
    std::atomic<bool> exited{false};  // set by the watcher, read by all
    std::uint64_t oom_kills = 0;      // reported so far (the watcher's alone)
  };
  bool IsCrun() const { return is_crun_; }
  std::filesystem::path DirOf(const SandboxId& id) const { return root_ / id.str(); }
  unsigned TakeSlot(const SandboxId& id);
  void Build(const VmSpec& spec, unsigned slot);
  void Track(const SandboxId& id, pid_t pid, std::uint64_t oom_kills_reported = 0);
  // The running containers, for the watcher's passes.
  std::vector<std::pair<SandboxId, std::shared_ptr<Running>>> Watched() const;
  bool WaitExited(const SandboxId& id, std::chrono::milliseconds timeout);
  void Adopt();
  void RemoveStrays();
  void Watch();
  // Logs the OOM kills inside each container since the last look.
  void ReportOomKills();
  void Wake();

  ContainerDriverOptions options_;
  std::filesystem::path root_;  // state_dir/containers
  std::unique_ptr<OciRuntime> runtime_;
  bool is_crun_ = true;
  SeccompProfile seccomp_;
  ImageMounts images_;
  // Output written after a daemon restart is not recorded: the pipe's
  // read end went with the old daemon.
  ConsoleRecorder consoles_;

  mutable std::mutex mutex_;
  std::map<SandboxId, unsigned> slots_;
  std::map<SandboxId, std::filesystem::path> image_of_;  // the rootfs each one holds
  std::map<SandboxId, std::shared_ptr<Running>> running_;
  // Held while a listener runs, so that clearing one (the engine going
  // away) waits for a call under way.
  std::mutex listener_mutex_;
  std::function<void(const SandboxId&)> stopped_listener_;
  OutOfMemoryListener oom_listener_;

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: the watcher re-reads running_
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

}  // namespace ephemera

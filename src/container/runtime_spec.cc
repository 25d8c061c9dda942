#include "container/runtime_spec.h"

namespace ephemera {

using nlohmann::json;

namespace {

// The OCI/Podman defaults, less /sys/firmware: a tmpfs of our own is
// mounted there (it carries the guest files), which hides the host's too.
const std::vector<std::string> kMaskedPaths = {"/proc/acpi",
                                               "/proc/kcore",
                                               "/proc/keys",
                                               "/proc/latency_stats",
                                               "/proc/timer_list",
                                               "/proc/timer_stats",
                                               "/proc/sched_debug",
                                               "/proc/scsi",
                                               "/sys/fs/selinux",
                                               "/sys/dev/block",
                                               "/sys/devices/virtual/powercap"};
const std::vector<std::string> kReadonlyPaths = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};

json Mount(const std::string& destination, const std::string& type, const std::string& source,
           std::vector<std::string> options) {
  return {{"destination", destination}, {"type", type}, {"source", source}, {"options", options}};
}

json Mounts(const RuntimeSpecInput& in) {
  json mounts = json::array();
  mounts.push_back(Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(
      Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}));
  mounts.push_back(
      Mount("/dev/pts", "devpts", "devpts",
            {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
  mounts.push_back(
      Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}));
  mounts.push_back(Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}));
  mounts.push_back(Mount("/sys/firmware", "tmpfs", "tmpfs",
                         {"nosuid", "noexec", "nodev", "mode=755", "size=64k"}));
  mounts.push_back(Mount(kGuestFilesInside, "bind", in.guest_files.string(),
                         {"rbind", "ro", "nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/run", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=755", "size=32768k"}));
  return mounts;
}

}  // namespace

json BuildRuntimeSpec(const RuntimeSpecInput& in) {
  json caps = in.capabilities;
  json process = {
      {"terminal", false},
      {"user", {{"uid", 0}, {"gid", 0}}},
      {"args", {"/bin/sh", "-c", ContainerInitScript()}},
      {"env", {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}},
      {"cwd", "/"},
      {"capabilities",
       {{"bounding", caps},
        {"effective", caps},
        {"permitted", caps},
        {"inheritable", json::array()},
        {"ambient", json::array()}}},
      // The guest contract runs the setup script through sudo (setuid).
      {"noNewPrivileges", false},
      {"oomScoreAdj", 500},
  };
  json id_map = {{{"containerID", 0}, {"hostID", in.host_uid}, {"size", in.uid_count}}};
  json linux_section = {
      {"uidMappings", id_map},
      {"gidMappings", id_map},
      // crun makes every namespace after the user one, so they belong to
      // it: sysfs can be mounted for the container's own network, and port
      // 22 bound by its root.
      {"namespaces",
       {{{"type", "user"}},
        {{"type", "pid"}},
        {{"type", "network"}},
        {{"type", "ipc"}},
        {{"type", "uts"}},
        {{"type", "mount"}},
        {{"type", "cgroup"}}}},
      {"maskedPaths", kMaskedPaths},
      {"readonlyPaths", kReadonlyPaths},
      {"rootfsPropagation", "private"},
  };
  if (!in.seccomp.is_null()) linux_section["seccomp"] = in.seccomp;
  if (!in.cgroups_path.empty()) linux_section["cgroupsPath"] = in.cgroups_path;
  json spec = {{"ociVersion", "1.0.2"},
               {"process", process},
               {"root", {{"path", in.rootfs.string()}, {"readonly", false}}},
               {"hostname", in.hostname},
               {"mounts", Mounts(in)},
               {"linux", linux_section}};
  if (!in.seccomp_bpf_base64.empty()) {
    // crun loads this instead of compiling linux.seccomp at every start.
    spec["annotations"] = {{"run.oci.seccomp_bpf_data", in.seccomp_bpf_base64}};
  }
  return spec;
}

const std::string& ContainerInitScript() {
  static const std::string script = R"(export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
mkdir -p /run/sshd /var/log
# Messages the image's scripts send to the console go to this one's output.
[ -e /dev/console ] || ln -s /proc/1/fd/2 /dev/console
echo EPHEMERA_GUEST_INIT
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
. /usr/lib/ephemera/guest-credentials.sh
echo EPHEMERA_SSHD_STARTING
exec /usr/sbin/sshd -D -e
)";
  return script;
}

}  // namespace ephemera

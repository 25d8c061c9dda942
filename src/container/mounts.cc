#include "container/mounts.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/subprocess.h"

namespace ephemera {

namespace fs = std::filesystem;

void MountImageReadOnly(const fs::path& image, const fs::path& target) {
  // mount(8) finds a free loop device and sets it to clear itself when the
  // filesystem is unmounted; noload: a read-only mount replays no journal.
  ProcessResult r = RunProcess(
      {"mount", "-t", "ext4", "-o", "loop,ro,noload,nodev,nosuid", image.string(), target.string()},
      std::chrono::seconds(60));
  if (!r.ok()) {
    Fail(ErrorCode::kInvalidArgument, "cannot mount image {} read-only: {}", image.string(),
         r.err.empty() ? r.out : r.err);
  }
}

namespace {

void WriteProcFile(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    FailErrno("cannot write " + path, errno);
  }
}

}  // namespace

UniqueFd MakeUserNamespace(uid_t host_base, unsigned count) {
  int gate[2];
  if (::pipe2(gate, O_CLOEXEC) != 0) FailErrno("cannot make a pipe", errno);
  UniqueFd gate_read(gate[0]), gate_write(gate[1]);
  // A raw clone straight into the new namespace: the child only blocks in
  // read(2) until it is killed, so nothing of the parent's state matters.
  const long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
  if (pid < 0) FailErrno("cannot create a user namespace", errno);
  if (pid == 0) {
    char byte;
    ::syscall(SYS_read, gate[0], &byte, 1);
    ::syscall(SYS_exit_group, 0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      int status;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  } reap{static_cast<pid_t>(pid)};
  const std::string proc = "/proc/" + std::to_string(pid);
  const std::string map = fmt::format("0 {} {}\n", host_base, count);
  WriteProcFile(proc + "/uid_map", map);
  WriteProcFile(proc + "/gid_map", map);
  UniqueFd ns(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) FailErrno("cannot open the new user namespace", errno);
  return ns;
}

void MountIdmapped(const fs::path& source, const fs::path& target, int userns_fd) {
  UniqueFd tree(::open_tree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (!tree) FailErrno("cannot clone the mount " + source.string(), errno);
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV;
  attr.userns_fd = static_cast<std::uint64_t>(userns_fd);
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    FailErrno("cannot idmap the mount of " + source.string(), errno);
  }
  if (::move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    FailErrno("cannot attach the idmapped mount at " + target.string(), errno);
  }
}

void MountTmpfs(const fs::path& target, unsigned size_mib, uid_t uid, gid_t gid) {
  const std::string options = fmt::format("size={}m,mode=0755,uid={},gid={}", size_mib, uid, gid);
  if (::mount("tmpfs", target.c_str(), "tmpfs", MS_NODEV | MS_NOSUID, options.c_str()) != 0) {
    FailErrno("cannot mount a tmpfs at " + target.string(), errno);
  }
}

void MountOverlay(const fs::path& lower, const fs::path& upper, const fs::path& work,
                  const fs::path& target) {
  const std::string options =
      "lowerdir=" + lower.string() + ",upperdir=" + upper.string() + ",workdir=" + work.string();
  if (::mount("overlay", target.c_str(), "overlay", MS_NODEV, options.c_str()) != 0) {
    FailErrno("cannot mount the overlay at " + target.string(), errno);
  }
}

void Unmount(const fs::path& target) {
  if (::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL &&
      errno != ENOENT) {
    FailErrno("cannot unmount " + target.string(), errno);
  }
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      int value = 0;
      bool octal = true;
      for (std::size_t k = 1; k <= 3; ++k) {
        const char c = field[i + k];
        octal = octal && c >= '0' && c <= '7';
        value = value * 8 + (c - '0');
      }
      if (octal) {
        out += static_cast<char>(value);
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

}  // namespace

std::vector<fs::path> MountsUnder(const fs::path& dir) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) FailErrno("cannot read /proc/self/mountinfo", errno);
  const std::string prefix = dir.lexically_normal().string();
  std::vector<fs::path> found;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    if (!(fields >> id >> parent >> device >> root >> point)) continue;
    std::string path = Unescape(point);
    if (path == prefix || path.rfind(prefix + "/", 0) == 0) found.emplace_back(path);
  }
  // Deepest first, so that a parent is unmounted after what is on it.
  std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) {
    const auto& x = a.string();
    const auto& y = b.string();
    return x.size() != y.size() ? x.size() > y.size() : x < y;
  });
  found.erase(std::unique(found.begin(), found.end()), found.end());
  return found;
}

}  // namespace ephemera

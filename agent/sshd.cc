#include "agent/sshd.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "agent/accounts.h"
#include "agent/error.h"
#include "agent/files.h"

namespace ephemera::agent {

namespace {

std::set<uint64_t> ListeningNow(const SshdOptions& options, uint16_t port) {
  std::set<uint64_t> inodes;
  for (const char* table : {"/tcp", "/tcp6"}) {
    if (std::optional<std::string> text = ReadFileIfExists(options.proc_net + table)) {
      inodes.merge(ListeningInodes(*text, port));
    }
  }
  return inodes;
}

// The pid in sshd's pid file when that process is alive; 0 otherwise.
pid_t RunningPid(const SshdOptions& options) {
  std::optional<std::string> text = ReadFileIfExists(options.pid_file);
  if (!text) return 0;
  pid_t pid = 0;
  std::from_chars(text->data(), text->data() + text->size(), pid);
  return pid > 1 && ::kill(pid, 0) == 0 ? pid : 0;
}

// Wakes up when a file in the pid file's folder is written: sshd writes
// its pid file right after it starts listening. Looking at /proc/net/tcp
// every few milliseconds instead would take CPU from sshd itself (one
// emulated CPU); the timeout is the fallback.
class PidFileWatch {
 public:
  explicit PidFileWatch(const std::string& pid_file)
      : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    std::string dir = pid_file.substr(0, pid_file.rfind('/') + 1);
    if (fd_ >= 0 && ::inotify_add_watch(fd_, dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
      ::close(std::exchange(fd_, -1));
    }
  }
  ~PidFileWatch() {
    if (fd_ >= 0) ::close(fd_);
  }
  PidFileWatch(const PidFileWatch&) = delete;
  PidFileWatch& operator=(const PidFileWatch&) = delete;

  void Wait(std::chrono::milliseconds timeout) {
    if (fd_ < 0) {
      timespec pause{0, static_cast<long>(timeout.count()) * 1000000};
      ::nanosleep(&pause, nullptr);
      return;
    }
    pollfd wait{fd_, POLLIN, 0};
    ::poll(&wait, 1, static_cast<int>(timeout.count()));
    alignas(inotify_event) char events[4096];
    while (::read(fd_, events, sizeof events) > 0) {
    }
  }

 private:
  int fd_;
};

// The last line sshd wrote (its reason to exit), at most 4 KiB read.
std::string LastLine(int fd) {
  char buffer[4096];
  ssize_t n = ::read(fd, buffer, sizeof buffer);
  std::string text(buffer, n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
}

}  // namespace

std::set<uint64_t> ListeningInodes(std::string_view table, uint16_t port) {
  // "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when
  // retrnsmt   uid  timeout inode": the address ends in ":PORT" (hex).
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port);
  std::set<uint64_t> inodes;
  std::vector<std::string_view> lines = SplitLines(table);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string_view> fields;
    std::string_view rest = lines[i];
    while (!rest.empty() && fields.size() < 10) {
      size_t start = rest.find_first_not_of(' ');
      if (start == std::string_view::npos) break;
      rest.remove_prefix(start);
      size_t end = rest.find(' ');
      fields.push_back(rest.substr(0, end));
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
    }
    if (fields.size() < 10 || fields[3] != "0A" || !fields[1].ends_with(want)) continue;
    uint64_t inode = 0;
    std::from_chars(fields[9].data(), fields[9].data() + fields[9].size(), inode);
    if (inode != 0) inodes.insert(inode);
  }
  return inodes;
}

int Spawn(const char* const argv[], int stderr_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  if (stderr_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  // The agent blocks SIGIO and ignores SIGPIPE; its children must not.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGIO);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const char* const environment[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", nullptr};
  pid_t pid = 0;
  int error = ::posix_spawn(&pid, argv[0], &actions, &attributes, const_cast<char* const*>(argv),
                            const_cast<char* const*>(environment));
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) throw std::runtime_error(ErrnoText("start", argv[0], error));
  return pid;
}

std::string WaitFor(int pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::string("lost: ") + std::strerror(errno);
  }
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status) == 0 ? "" : "status " + std::to_string(WEXITSTATUS(status));
  }
  return "signal " + std::to_string(WTERMSIG(status));
}

// Whether a process named sshd runs (one the boot started, still coming up).
static bool SshdStarting(const SshdOptions& options) {
  DIR* proc = ::opendir(options.proc.c_str());
  if (proc == nullptr) return false;
  bool found = false;
  while (dirent* entry = ::readdir(proc)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    std::optional<std::string> comm =
        ReadFileIfExists(options.proc + "/" + entry->d_name + "/comm");
    if (comm && (*comm == "sshd\n" || *comm == "sshd")) {
      found = true;
      break;
    }
  }
  ::closedir(proc);
  return found;
}

bool AwaitSshd(uint16_t port, const SshdOptions& options) {
  PidFileWatch watch(options.pid_file);
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  for (;;) {
    // sshd writes its pid file once it listens.
    if (RunningPid(options) != 0 && !ListeningNow(options, port).empty()) return true;
    if (std::chrono::steady_clock::now() > deadline || !SshdStarting(options)) return false;
    watch.Wait(std::chrono::milliseconds(50));
  }
}

void StartSshd(uint16_t port, const SshdOptions& options) {
  PidFileWatch watch(options.pid_file);
  std::set<uint64_t> before = ListeningNow(options, port);
  pid_t reloaded = RunningPid(options);
  if (reloaded != 0) {
    // The listener re-executes itself with the new configuration, same pid.
    if (::kill(reloaded, SIGHUP) != 0) {
      throw std::runtime_error(ErrnoText("signal", "sshd", errno));
    }
  } else {
    // Its privilege separation directory (rcS makes it; /run is a tmpfs).
    EnsureDir(options.privsep_dir, 0755);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      throw std::runtime_error(ErrnoText("make", "a pipe", errno));
    }
    const char* const argv[] = {options.binary.c_str(), nullptr};
    pid_t launcher;
    try {
      launcher = Spawn(argv, pipe_fds[1]);
    } catch (...) {
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      throw;
    }
    ::close(pipe_fds[1]);
    // sshd checks its configuration and keys, forks the daemon and exits.
    std::string failure = WaitFor(launcher);
    std::string said = failure.empty() ? "" : LastLine(pipe_fds[0]);
    ::close(pipe_fds[0]);
    if (!failure.empty()) {
      throw std::runtime_error(options.binary + " exited with " + failure +
                               (said.empty() ? "" : ": " + said));
    }
  }

  // A daemon that dies after forking (a port it cannot bind) writes no pid
  // file: only the timeout tells.
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  for (;;) {
    for (uint64_t inode : ListeningNow(options, port)) {
      if (before.count(inode) == 0) return;
    }
    if (reloaded != 0 && ::kill(reloaded, 0) != 0) {
      throw std::runtime_error("exited after reloading its configuration");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("not listening on port " + std::to_string(port) + " after " +
                               std::to_string(options.timeout.count() / 1000) +
                               " s (logread in the guest may say why)");
    }
    watch.Wait(std::chrono::milliseconds(50));
  }
}

}  // namespace ephemera::agent

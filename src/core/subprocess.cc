#include "core/subprocess.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "core/error.h"
#include "core/unique_fd.h"

extern char** environ;

namespace ephemera {

namespace fs = std::filesystem;

std::optional<fs::path> FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return fs::path(name);
    return std::nullopt;
  }
  const char* env_path = std::getenv("PATH");
  std::string search = env_path ? env_path : "/usr/bin:/bin";
  search += ":/usr/local/sbin:/usr/sbin:/sbin";
  std::stringstream dirs(search);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    fs::path candidate = fs::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

Pipe MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) FailErrno("cannot make a pipe", errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

namespace {

int WaitChild(pid_t pid, int* status) {
  for (;;) {
    pid_t r = ::waitpid(pid, status, 0);
    if (r >= 0 || errno != EINTR) return r;
  }
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         std::size_t max_output) {
  return RunProcess(argv, RunOptions{timeout, max_output, std::nullopt, false});
}

ProcessResult RunProcess(const std::vector<std::string>& argv, const RunOptions& options) {
  const auto timeout = options.timeout;
  const std::size_t max_output = options.max_output;
  if (argv.empty()) Fail(ErrorCode::kInternal, "RunProcess: empty argv");
  auto program = FindProgram(argv[0]);
  if (!program) Fail(ErrorCode::kUnavailable, "program '{}' not found", argv[0]);

  Pipe out = MakePipe();
  Pipe err = MakePipe();
  std::optional<Pipe> in;
  if (options.stdin_data) in = MakePipe();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (in) {
    posix_spawn_file_actions_adddup2(&actions, in->read.get(), 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), 2);
  // Nothing else is inherited: a daemonized QEMU or dnsmasq must not keep
  // the daemon's sockets (API connections, listeners) open after it exits.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  if (options.own_process_group) {
    posix_spawnattr_setpgroup(&attr, 0);
    flags |= POSIX_SPAWN_SETPGROUP;
  }
  posix_spawnattr_setflags(&attr, flags);

  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, program->c_str(), &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0)
    FailErrno(fmt::format("cannot start {}", program->string()), rc, ErrorCode::kUnavailable);
  out.write.reset();
  err.write.reset();
  std::string_view to_write;
  if (in) {
    in->read.reset();
    ::fcntl(in->write.get(), F_SETFL, O_NONBLOCK);
    to_write = *options.stdin_data;
  }

  ProcessResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[3] = {{out.read.get(), POLLIN, 0},
                   {err.read.get(), POLLIN, 0},
                   {in ? in->write.get() : -1, POLLOUT, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_streams = 2;
  bool timed_out = false;
  auto close_stdin = [&] {
    fds[2].fd = -1;
    if (in) in->write.reset();
  };
  if (in && to_write.empty()) close_stdin();
  while (open_streams > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int n = ::poll(fds, 3, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) break;
    if (fds[2].fd >= 0 && (fds[2].revents & (POLLOUT | POLLHUP | POLLERR))) {
      // A program that does not read its stdin gets what fits, then EOF.
      ssize_t put = ::write(fds[2].fd, to_write.data(), to_write.size());
      if (put > 0) to_write.remove_prefix(static_cast<std::size_t>(put));
      if (to_write.empty() || (put < 0 && errno != EAGAIN && errno != EINTR)) close_stdin();
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buffer[8192];
      ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got <= 0) {
        if (got < 0 && errno == EINTR) continue;
        fds[i].fd = -1;
        --open_streams;
        continue;
      }
      std::size_t room = max_output - std::min(max_output, sinks[i]->size());
      sinks[i]->append(buffer, std::min(room, static_cast<std::size_t>(got)));
    }
  }
  if (timed_out) ::kill(options.own_process_group ? -pid : pid, SIGKILL);
  if (options.own_process_group) {
    // Whatever of its group is left (a background child holding no pipe)
    // goes with it; killed while the leader is not yet reaped, so that its
    // group id cannot have passed to someone else.
    siginfo_t info{};
    while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) < 0 &&
           errno == EINTR) {
    }
    ::kill(-pid, SIGKILL);
  }
  int status = 0;
  WaitChild(pid, &status);
  if (timed_out) {
    Fail(ErrorCode::kTimeout, "{} did not finish within {} ms", argv[0], timeout.count());
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  return result;
}

ProcessResult RunChecked(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  ProcessResult result = RunProcess(argv, timeout);
  if (!result.ok()) {
    std::string detail = result.err.empty() ? result.out : result.err;
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    if (result.term_signal != 0) {
      Fail(ErrorCode::kInternal, "{} was killed by signal {}", argv[0], result.term_signal);
    }
    Fail(ErrorCode::kInternal, "{} failed (exit {}): {}", argv[0], result.exit_code, detail);
  }
  return result;
}

namespace {

// What the child reports through the error pipe when a step fails.
struct SpawnFailure {
  int step = 0;
  int error = 0;
};

constexpr const char* kSpawnSteps[] = {"set up descriptors",
                                       "join its cgroup",
                                       "drop privileges",
                                       "start a session",
                                       "exec",
                                       "open /dev/null",
                                       "hide mounts in a private mount namespace"};

[[noreturn]] void ChildFail(int pipe_fd, int step) {
  SpawnFailure failure{step, errno};
  (void)!::write(pipe_fd, &failure, sizeof failure);
  ::_exit(127);
}

}  // namespace

SpawnedProcess Spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) Fail(ErrorCode::kInternal, "Spawn: empty argv");
  auto program = FindProgram(spec.argv[0]);
  if (!program) Fail(ErrorCode::kUnavailable, "program '{}' not found", spec.argv[0]);
  // Everything the child touches is made before fork: after it, only
  // async-signal-safe calls are allowed.
  const std::string path = program->string();
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int highest_target = 2;
  for (const auto& [from, to] : spec.fds) highest_target = std::max(highest_target, to);
  Pipe errors = MakePipe();
  sigset_t all;
  sigfillset(&all);
  sigset_t saved;
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = ::fork();
  if (pid == 0) {
    // Everything is first moved above the highest target, so no dup2 below
    // overwrites a descriptor still needed (the error pipe included).
    const int base = highest_target + 1;
    const int report = ::fcntl(errors.write.get(), F_DUPFD_CLOEXEC, base);
    if (report < 0) ::_exit(127);
    int moved[64];
    const std::size_t count = std::min<std::size_t>(spec.fds.size(), 64);
    for (std::size_t i = 0; i < count; ++i) {
      moved[i] = ::fcntl(spec.fds[i].first, F_DUPFD_CLOEXEC, base);
      if (moved[i] < 0) ChildFail(report, 0);
    }
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) ChildFail(report, 5);
    for (int std_fd = 0; std_fd <= 2; ++std_fd) {
      if (::dup2(null, std_fd) < 0) ChildFail(report, 0);
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (::dup2(moved[i], spec.fds[i].second) < 0) ChildFail(report, 0);
    }
    // Close what is not a target: below the base one by one, above it all
    // but the error pipe (close-on-exec, open until exec succeeds).
    for (int fd = 3; fd < base; ++fd) {
      bool target = false;
      for (std::size_t i = 0; i < count; ++i) target = target || spec.fds[i].second == fd;
      if (!target) ::close(fd);
    }
    if (report > base) ::syscall(SYS_close_range, base, report - 1, 0u);
    ::syscall(SYS_close_range, report + 1, ~0u, 0u);
    for (const auto& file : spec.cgroup_procs) {
      int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0 || ::write(fd, "0", 1) != 1) ChildFail(report, 1);
      ::close(fd);
    }
    if (!spec.hidden_mounts.empty()) {
      if (::unshare(CLONE_NEWNS) != 0 ||
          ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
        ChildFail(report, 6);
      }
      for (const auto& target : spec.hidden_mounts) {
        if (::umount2(target.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
          ChildFail(report, 6);
        }
      }
    }
    if (spec.gid && (::setgroups(spec.groups.size(), spec.groups.data()) != 0 ||
                     ::setresgid(*spec.gid, *spec.gid, *spec.gid) != 0)) {
      ChildFail(report, 2);
    }
    if (spec.uid && ::setresuid(*spec.uid, *spec.uid, *spec.uid) != 0) ChildFail(report, 2);
    if (::setsid() < 0) ChildFail(report, 3);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(path.c_str(), argv.data(), environ);
    ChildFail(report, 4);
  }
  const int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) FailErrno(fmt::format("cannot start {}", path), fork_errno, ErrorCode::kUnavailable);
  errors.write.reset();
  SpawnedProcess spawned{pid, UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)))};
  SpawnFailure failure;
  ssize_t n;
  do {
    n = ::read(errors.read.get(), &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof failure) {
    int status = 0;
    WaitChild(pid, &status);
    FailErrno(fmt::format("cannot start {}: could not {}", path, kSpawnSteps[failure.step]),
              failure.error, ErrorCode::kUnavailable);
  }
  if (!spawned.pidfd) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    int status = 0;
    WaitChild(pid, &status);
    FailErrno(fmt::format("cannot track {} (pidfd_open)", path), err, ErrorCode::kUnavailable);
  }
  return spawned;
}

}  // namespace ephemera

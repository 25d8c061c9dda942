#include "core/tracked_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "core/error.h"
#include "core/fs.h"

namespace ephemera {

namespace {

constexpr int kPidfdIdType = 3;  // P_PIDFD (Linux 5.4), which glibc 2.36 does not name

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Whether /proc shows `pid` with `needle` in its command line; nullopt once
// the process is gone. Any other failure (no descriptor left, EIO) throws:
// "could not check" must never be read as "not running".
std::optional<bool> CmdlineMentions(pid_t pid, const std::string& needle) {
  const std::string path = "/proc/" + std::to_string(pid) + "/cmdline";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string cmdline;
  char buffer[4096];
  ssize_t n = 0;
  while (fd && (n = ::read(fd.get(), buffer, sizeof buffer)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    cmdline.append(buffer, static_cast<std::size_t>(n));
  }
  if (!fd || n < 0) {
    if (errno == ENOENT || errno == ESRCH) return std::nullopt;
    FailErrno(fmt::format("cannot check process {}", pid), errno, ErrorCode::kUnavailable);
  }
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  return cmdline.find(needle) != std::string::npos;
}

}  // namespace

std::optional<TrackedProcess> TrackedProcess::Find(const std::filesystem::path& pidfile,
                                                   const std::string& needle) {
  std::string text;
  try {
    text = ReadFile(pidfile);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound) return std::nullopt;
    throw Error(ErrorCode::kUnavailable,
                fmt::format("cannot check pid file {}: {}", pidfile.string(), e.what()));
  }
  pid_t pid = 0;
  auto begin = text.data();
  auto end = text.data() + text.size();
  while (end > begin && (end[-1] == '\n' || end[-1] == ' ')) --end;
  auto [ptr, ec] = std::from_chars(begin, end, pid);
  if (ec != std::errc() || ptr != end || pid <= 1) return std::nullopt;
  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd) {
    if (errno == ESRCH) return std::nullopt;
    FailErrno(fmt::format("cannot check process {} of {}", pid, pidfile.string()), errno,
              ErrorCode::kUnavailable);
  }
  // Checked after taking the pidfd: the pidfd now pins this very process.
  auto mentions = CmdlineMentions(pid, needle);
  if (!mentions || !*mentions) return std::nullopt;
  return TrackedProcess(pid, std::move(pidfd));
}

std::optional<TrackedProcess> TrackedProcess::Find(const std::filesystem::path& pidfile,
                                                   const std::filesystem::path& owner_dir) {
  return Find(pidfile, owner_dir.string() + "/");
}

TrackedProcess TrackedProcess::Adopt(pid_t pid, UniqueFd pidfd) {
  return TrackedProcess(pid, std::move(pidfd));
}

bool TrackedProcess::Alive() const { return !WaitExit(std::chrono::milliseconds(0)); }

void TrackedProcess::Signal(int sig) {
  if (PidfdSendSignal(pidfd_.get(), sig) != 0 && errno != ESRCH) {
    FailErrno("cannot signal pid " + std::to_string(pid_), errno);
  }
}

void TrackedProcess::Stop(std::chrono::milliseconds grace) {
  Signal(SIGTERM);
  if (WaitExit(grace)) return;
  Signal(SIGKILL);
  if (!WaitExit(std::chrono::seconds(10))) {
    Fail(ErrorCode::kInternal, "pid {} did not exit after SIGKILL", pid_);
  }
}

bool TrackedProcess::WaitExit(std::chrono::milliseconds timeout) const {
  // A pidfd becomes readable when the process exits (for non-children too).
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(std::max<long>(0, left.count())));
    if (ready > 0) {
      // Our own child (QEMU is one) is reaped here so it leaves no zombie;
      // for anyone else's process this is ECHILD, which is fine.
      siginfo_t info{};
      ::waitid(static_cast<idtype_t>(kPidfdIdType), static_cast<id_t>(pidfd_.get()), &info,
               WEXITED | WNOHANG);
      return true;
    }
    if (ready == 0) return false;
    if (errno != EINTR) FailErrno("poll on pidfd", errno);
  }
}

}  // namespace ephemera

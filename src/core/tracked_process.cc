#include "core/tracked_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "core/error.h"
#include "core/fs.h"

namespace ephemera {

namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

bool CmdlineMentions(pid_t pid, const std::string& needle) {
  std::string cmdline;
  try {
    cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  } catch (const Error&) {
    return false;
  }
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  return cmdline.find(needle) != std::string::npos;
}

}  // namespace

std::optional<TrackedProcess> TrackedProcess::Find(const std::filesystem::path& pidfile,
                                                   const std::filesystem::path& owner_dir) {
  std::string text;
  try {
    text = ReadFile(pidfile);
  } catch (const Error&) {
    return std::nullopt;
  }
  pid_t pid = 0;
  auto begin = text.data();
  auto end = text.data() + text.size();
  while (end > begin && (end[-1] == '\n' || end[-1] == ' ')) --end;
  auto [ptr, ec] = std::from_chars(begin, end, pid);
  if (ec != std::errc() || ptr != end || pid <= 1) return std::nullopt;
  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd) return std::nullopt;
  // Checked after taking the pidfd: the pidfd now pins this very process.
  if (!CmdlineMentions(pid, owner_dir.string() + "/")) return std::nullopt;
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
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) FailErrno("poll on pidfd", errno);
  }
}

}  // namespace ephemera

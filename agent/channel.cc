#include "agent/channel.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "agent/files.h"

namespace ephemera::agent {

std::string FindPort(const std::string& name, const std::string& sys_class) {
  DIR* dir = ::opendir(sys_class.c_str());
  if (dir == nullptr) return "";
  std::string found;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::optional<std::string> port_name;
    try {
      port_name = ReadFileIfExists(sys_class + "/" + entry->d_name + "/name");
    } catch (const std::exception&) {
      continue;  // a port going away meanwhile
    }
    if (port_name && (*port_name == name || *port_name == name + "\n")) {
      found = std::string("/dev/") + entry->d_name;
      break;
    }
  }
  ::closedir(dir);
  return found;
}

int OpenPort(const std::string& name, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::string device = FindPort(name);
    if (!device.empty()) {
      int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
      if (fd >= 0) return fd;
    } else {
      errno = ENOENT;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    int saved = errno;
    timespec pause{0, 20 * 1000 * 1000};
    ::nanosleep(&pause, nullptr);
    errno = saved;
  }
}

std::vector<LineFramer::Frame> LineFramer::Feed(std::string_view bytes) {
  std::vector<Frame> frames;
  while (!bytes.empty()) {
    size_t newline = bytes.find('\n');
    std::string_view piece = bytes.substr(0, newline);
    bytes.remove_prefix(newline == std::string_view::npos ? bytes.size() : newline + 1);
    if (!skipping_ && partial_.size() + piece.size() > max_line_) {
      frames.push_back({true, ""});
      partial_.clear();
      skipping_ = true;
    }
    if (skipping_) {
      if (newline != std::string_view::npos) skipping_ = false;
      continue;
    }
    partial_ += piece;
    if (newline == std::string_view::npos) break;
    if (!partial_.empty()) frames.push_back({false, std::move(partial_)});
    partial_.clear();
  }
  return frames;
}

void LineFramer::Reset() {
  partial_.clear();
  skipping_ = false;
}

void BlockSigio() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

Port::Port(int fd) : fd_(fd) {
  BlockSigio();
  ::fcntl(fd_, F_SETOWN, ::getpid());
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK | O_ASYNC);
}

Port::~Port() { ::close(fd_); }

ssize_t Port::Read(char* buffer, size_t size) {
  for (;;) {
    ssize_t n = ::read(fd_, buffer, size);
    if (n >= 0) return n;  // 0: no host (with a host and no data: EAGAIN)
    if (errno != EAGAIN && errno != EINTR) return -1;
    pollfd wait{fd_, POLLIN, 0};
    if (::poll(&wait, 1, -1) < 0 && errno != EINTR) return -1;
  }
}

ssize_t Port::TryRead(char* buffer, size_t size) {
  for (;;) {
    ssize_t n = ::read(fd_, buffer, size);
    if (n >= 0 || errno != EINTR) return n;
  }
}

bool Port::WriteLine(std::string_view line) {
  std::string text(line);
  text += '\n';
  std::string_view rest = text;
  std::optional<std::chrono::steady_clock::time_point> give_up;
  while (!rest.empty()) {
    ssize_t n = ::write(fd_, rest.data(), rest.size());
    if (n > 0) {
      rest.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    // Full, or no host: the port says POLLHUP (and never POLLOUT) while
    // the guest believes the host is not connected.
    pollfd wait{fd_, POLLOUT, 0};
    if (::poll(&wait, 1, -1) < 0 && errno != EINTR) return false;
    if ((wait.revents & POLLOUT) == 0 && (wait.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
      // A host that connects and sends at once (a clone restored from a
      // snapshot) can have its request read before the kernel's control
      // work marks the port connected: that news comes with a SIGIO
      // shortly after. Only a host still absent after the grace is gone.
      const auto now = std::chrono::steady_clock::now();
      if (!give_up) give_up = now + kHostConnectGrace;
      if (now >= *give_up) return false;
      WaitForHost(std::chrono::duration_cast<std::chrono::milliseconds>(*give_up - now));
    }
  }
  return true;
}

void Port::WaitForHost(std::chrono::milliseconds timeout) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  timespec wait{static_cast<time_t>(seconds.count()),
                static_cast<long>(std::chrono::nanoseconds(timeout - seconds).count())};
  ::sigtimedwait(&set, nullptr, &wait);
}

}  // namespace ephemera::agent

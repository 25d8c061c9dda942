#include "vm/console_recorder.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/unix_socket.h"

namespace ephemera {

namespace fs = std::filesystem;

ConsoleRecorder::ConsoleRecorder(std::size_t max_bytes)
    : max_bytes_(std::max<std::size_t>(max_bytes, 8192)) {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) FailErrno("epoll_create1", errno);
  wakeup_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wakeup_) FailErrno("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wakeup_.get();
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wakeup_.get(), &ev);
  thread_ = std::thread([this] { Loop(); });
}

ConsoleRecorder::~ConsoleRecorder() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  (void)!::write(wakeup_.get(), &one, sizeof one);
  thread_.join();
}

void ConsoleRecorder::Attach(const SandboxId& id, const fs::path& socket, const fs::path& log) {
  UniqueFd connection = TryConnectUnix(socket, true);
  if (!connection) {
    FailErrno(fmt::format("cannot connect to console {}", socket.string()), errno,
              ErrorCode::kUnavailable);
  }
  AttachSource(id, std::move(connection), log);
}

void ConsoleRecorder::AttachSource(const SandboxId& id, UniqueFd source, const fs::path& log) {
  if (::fcntl(source.get(), F_SETFL, ::fcntl(source.get(), F_GETFL) | O_NONBLOCK) != 0) {
    FailErrno("cannot make a console source non-blocking", errno);
  }
  Console console;
  console.socket = std::move(source);
  console.log_path = log;
  console.log.reset(::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!console.log) FailErrno(fmt::format("cannot open {}", log.string()), errno);
  struct stat st {};
  if (::fstat(console.log.get(), &st) == 0) console.written = static_cast<std::size_t>(st.st_size);
  std::lock_guard lock(mutex_);
  if (auto old = consoles_.find(id); old != consoles_.end()) {
    by_fd_.erase(old->second.socket.get());
    consoles_.erase(old);  // closing the fd removes it from epoll
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = console.socket.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, console.socket.get(), &ev) != 0) {
    FailErrno("epoll_ctl", errno);
  }
  by_fd_.emplace(console.socket.get(), id);
  consoles_.emplace(id, std::move(console));
}

void ConsoleRecorder::Detach(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  auto it = consoles_.find(id);
  if (it == consoles_.end()) return;
  by_fd_.erase(it->second.socket.get());
  consoles_.erase(it);
}

bool ConsoleRecorder::Recording(const SandboxId& id) const {
  std::lock_guard lock(mutex_);
  return consoles_.count(id) > 0;
}

void ConsoleRecorder::Rotate(Console& console) {
  fs::path previous = console.log_path;
  previous += ".1";
  ::rename(console.log_path.c_str(), previous.c_str());
  console.log.reset(
      ::open(console.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  console.written = 0;
}

void ConsoleRecorder::Drain(Console& console) {
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(console.socket.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    // Two files of half the budget each: the newest output is always kept.
    const std::size_t half = max_bytes_ / 2;
    const char* data = buffer;
    std::size_t size = static_cast<std::size_t>(n);
    if (size > half) {
      data += size - half;
      size = half;
    }
    if (console.written + size > half) Rotate(console);
    if (console.log) {
      // A full disk loses console output, never blocks the guest or us.
      ssize_t w = ::write(console.log.get(), data, size);
      if (w > 0) console.written += static_cast<std::size_t>(w);
    }
    if (n < static_cast<ssize_t>(sizeof buffer)) return;
  }
}

void ConsoleRecorder::Loop() {
  std::vector<epoll_event> events(32);
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno != EINTR) return;
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wakeup_.get()) {
        std::uint64_t value;
        (void)!::read(wakeup_.get(), &value, sizeof value);
        continue;
      }
      auto id = by_fd_.find(fd);
      if (id == by_fd_.end()) continue;  // detached meanwhile
      auto console = consoles_.find(id->second);
      Drain(console->second);
      if (events[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
        Drain(console->second);
        by_fd_.erase(id);
        consoles_.erase(console);  // QEMU has gone: nothing more will come
      }
    }
  }
}

}  // namespace ephemera

#include "wirt/inotify.h"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace ephemera::wirt {

namespace {

constexpr std::uint32_t kMask = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB |
                                IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_ONLYDIR | IN_EXCL_UNLINK;

}  // namespace

Inotify::Inotify() : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
  if (!fd_) FailErrno("inotify_init1", errno, ErrorCode::kUnavailable);
}

Inotify::Added Inotify::WatchPath(const std::string& path, std::uint64_t tag) {
  int wd = ::inotify_add_watch(fd_.get(), path.c_str(), kMask | IN_DONT_FOLLOW);
  if (wd < 0) return {};
  // The same directory again gives the same wd.
  return {wd, tags_.insert_or_assign(wd, tag).second};
}

Inotify::Added Inotify::WatchFd(int dir_fd, std::uint64_t tag) {
  // /proc/self/fd/N resolves to the directory itself (a magic link, so
  // IN_DONT_FOLLOW must not be given).
  const std::string path = "/proc/self/fd/" + std::to_string(dir_fd);
  int wd = ::inotify_add_watch(fd_.get(), path.c_str(), kMask);
  if (wd < 0) return {};
  return {wd, tags_.insert_or_assign(wd, tag).second};
}

void Inotify::Retain(std::uint64_t tag, const std::set<int>& keep) {
  for (auto it = tags_.begin(); it != tags_.end();) {
    if (it->second == tag && !keep.count(it->first)) {
      ::inotify_rm_watch(fd_.get(), it->first);
      it = tags_.erase(it);
    } else {
      ++it;
    }
  }
}

void Inotify::Forget(std::uint64_t tag) {
  for (auto it = tags_.begin(); it != tags_.end();) {
    if (it->second == tag) {
      ::inotify_rm_watch(fd_.get(), it->first);
      it = tags_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<Inotify::Event> Inotify::Drain() {
  std::vector<Event> events;
  alignas(struct inotify_event) char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd_.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: drained
    for (ssize_t at = 0; at < n;) {
      auto* e = reinterpret_cast<struct inotify_event*>(buffer + at);
      at += static_cast<ssize_t>(sizeof(struct inotify_event) + e->len);
      if (e->mask & IN_Q_OVERFLOW) {
        events.push_back({kOverflow, e->mask, {}});
        continue;
      }
      auto it = tags_.find(e->wd);
      if (it == tags_.end()) continue;
      Event event{it->second, e->mask,
                  e->len ? std::string(e->name, ::strnlen(e->name, e->len)) : ""};
      if (e->mask & IN_IGNORED) tags_.erase(it);  // the directory is gone
      events.push_back(std::move(event));
    }
  }
  return events;
}

}  // namespace ephemera::wirt

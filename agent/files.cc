#include "agent/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "agent/error.h"

namespace ephemera::agent {

std::string ErrnoText(std::string_view doing, std::string_view path, int err) {
  return "cannot " + std::string(doing) + " " + std::string(path) + ": " + std::strerror(err);
}

namespace {

[[noreturn]] void Fail(std::string_view doing, std::string_view path, int err = errno) {
  throw std::runtime_error(ErrnoText(doing, path, err));
}

// Closes on every path out; a failing close (the write's last chance to
// report an error) is checked where it matters.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// What a new file gets without fchown and fchmod; read once.
struct Creator {
  uid_t uid;
  gid_t gid;
  mode_t umask;
};

const Creator& Process() {
  static const Creator creator = [] {
    mode_t mask = ::umask(0);
    ::umask(mask);
    return Creator{::geteuid(), ::getegid(), mask};
  }();
  return creator;
}

}  // namespace

Root::Root(std::string_view dir) : prefix_(dir) {
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
}

std::string Root::operator()(std::string_view absolute) const {
  return prefix_ + std::string(absolute);
}

std::optional<std::string> ReadFileIfExists(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    Fail("open", path);
  }
  std::string content;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("read", path);
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  return content;
}

std::string ReadFile(const std::string& path) {
  std::optional<std::string> content = ReadFileIfExists(path);
  if (!content) Fail("read", path, ENOENT);
  return std::move(*content);
}

std::string StageFile(const std::string& path, std::string_view content, Ownership ownership,
                      Keep keep) {
  if (keep == Keep::kOriginal) {
    struct stat original;
    if (::stat(path.c_str(), &original) == 0) {
      ownership = {original.st_mode & 07777, original.st_uid, original.st_gid};
    } else if (errno != ENOENT) {
      Fail("stat", path);
    }
  }
  std::string staged = path + ".ephemera-new";
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  Fd fd(::open(staged.c_str(), flags, ownership.mode & 0777));
  if (fd.get() < 0 && errno == EEXIST) {
    // Left over from a machine stopped half-way: start afresh.
    if (::unlink(staged.c_str()) != 0) Fail("remove", staged);
    fd = Fd(::open(staged.c_str(), flags, ownership.mode & 0777));
  }
  if (fd.get() < 0) Fail("create", staged);
  // Only what open() did not already get right: under emulation every
  // system call counts. Owner first: chown clears set-id bits.
  if (ownership.uid != Process().uid || ownership.gid != Process().gid) {
    if (::fchown(fd.get(), ownership.uid, ownership.gid) != 0) Fail("chown", staged);
  }
  if ((ownership.mode & ~0777) != 0 || (ownership.mode & Process().umask) != 0) {
    if (::fchmod(fd.get(), ownership.mode) != 0) Fail("chmod", staged);
  }
  // No fsync: the machine is disposable, and ext4 orders the data of a file
  // renamed over another before the rename (auto_da_alloc).
  while (!content.empty()) {
    ssize_t n = ::write(fd.get(), content.data(), content.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail("write", staged);
    content.remove_prefix(static_cast<size_t>(n));
  }
  if (::close(fd.release()) != 0) Fail("write", staged);
  return staged;
}

void CommitFile(const std::string& staged, const std::string& path) {
  if (::rename(staged.c_str(), path.c_str()) != 0) Fail("rename over", path);
}

void ReplaceFile(const std::string& path, std::string_view content, Ownership ownership,
                 Keep keep) {
  CommitFile(StageFile(path, content, ownership, keep), path);
}

void MakeDir(const std::string& path, Ownership ownership) {
  if (::mkdir(path.c_str(), 0700) != 0) {
    if (errno != EEXIST) Fail("create", path);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) Fail("stat", path);
    if (!S_ISDIR(st.st_mode)) Fail("use", path, ENOTDIR);
  }
  if (::chown(path.c_str(), ownership.uid, ownership.gid) != 0) Fail("chown", path);
  if (::chmod(path.c_str(), ownership.mode) != 0) Fail("chmod", path);
}

void EnsureDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) Fail("create", path);
}

void RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) Fail("remove", path);
}

}  // namespace ephemera::agent

#include "client/private_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>

namespace ephemera::client {

namespace fs = std::filesystem;

fs::path ConfigDir() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return fs::path(xdg) / "ephemera";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/root") / ".config" / "ephemera";
}

namespace {

[[noreturn]] void Throw(const std::string& what, int err) {
  throw std::runtime_error(what + ": " + std::strerror(err));
}

// The folder of secrets: created 0700, and refused unless it is a real
// directory (not a symlink) that this user owns and nobody else can write.
void MakePrivateDirectory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir.parent_path(), ec)) fs::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    Throw("cannot create " + dir.string(), errno);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) Throw("cannot check " + dir.string(), errno);
  if (!S_ISDIR(st.st_mode)) {
    throw std::runtime_error(dir.string() +
                             " is not a directory (a symlink?); refusing to keep "
                             "secrets there");
  }
  if (st.st_uid != ::geteuid()) {
    throw std::runtime_error(dir.string() +
                             " belongs to another user; refusing to keep secrets "
                             "there");
  }
  if ((st.st_mode & 0077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    Throw("cannot make " + dir.string() + " private (chmod 0700)", errno);
  }
}

std::string UniqueSuffix() {
  std::random_device device;
  static const char kDigits[] = "0123456789abcdef";
  std::string suffix = ".tmp.";
  for (int i = 0; i < 12; ++i) suffix += kDigits[device() % 16];
  return suffix;
}

}  // namespace

FileLock::FileLock(const fs::path& file) {
  MakePrivateDirectory(file.parent_path());
  fd_ = ::open((file.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) {
    int err = errno;
    if (fd_ >= 0) ::close(fd_);
    Throw("cannot lock " + file.string(), err);
  }
}

FileLock::~FileLock() { ::close(fd_); }

std::optional<std::string> ReadPrivateFile(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    Throw("cannot read " + file.string(), errno);
  }
  std::string text;
  char buffer[8192];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  int error = errno;
  ::close(fd);
  if (n < 0) Throw("cannot read " + file.string(), error);
  return text;
}

void WritePrivateFile(const fs::path& file, const std::string& text) {
  MakePrivateDirectory(file.parent_path());
  // A fresh name, created exclusively and never through a symlink: nothing
  // planted in the folder can receive the secrets. 0600 from the start.
  fs::path temp;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    temp = file;
    temp += UniqueSuffix();
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) Throw("cannot write " + temp.string(), errno);
  }
  if (fd < 0)
    throw std::runtime_error("cannot write " + file.string() + ": no free temporary name");
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  // rename replaces whatever `file` is, a symlink included, without following it.
  if (!ok || ::rename(temp.c_str(), file.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    Throw("cannot write " + file.string(), err);
  }
}

}  // namespace ephemera::client

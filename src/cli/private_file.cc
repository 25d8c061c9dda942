#include "cli/private_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace ephemera::cli {

namespace fs = std::filesystem;

fs::path ConfigDir() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return fs::path(xdg) / "ephemera";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/root") / ".config" / "ephemera";
}

namespace {

void MakePrivateDirectory(const fs::path& dir) {
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
}

}  // namespace

FileLock::FileLock(const fs::path& file) {
  MakePrivateDirectory(file.parent_path());
  fd_ = ::open((file.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) {
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("cannot lock " + file.string() + ": " + std::strerror(errno));
  }
}

FileLock::~FileLock() { ::close(fd_); }

std::optional<std::string> ReadPrivateFile(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw std::runtime_error("cannot read " + file.string() + ": " + std::strerror(errno));
  }
  std::string text;
  char buffer[8192];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  int error = errno;
  ::close(fd);
  if (n < 0) throw std::runtime_error("cannot read " + file.string() + ": " + std::strerror(error));
  return text;
}

void WritePrivateFile(const fs::path& file, const std::string& text) {
  MakePrivateDirectory(file.parent_path());
  fs::path temp = file;
  temp += ".tmp";
  // Created 0600 from the start: the secrets are never readable by others.
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error("cannot write " + temp.string() + ": " + std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), file.c_str()) != 0) {
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot write " + file.string());
  }
}

}  // namespace ephemera::cli

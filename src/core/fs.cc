#include "core/fs.h"

#include <linux/openat2.h>
#include <sys/syscall.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "core/error.h"
#include "core/random.h"
#include "core/unique_fd.h"

namespace ephemera {

UniqueFd OpenFile(const std::filesystem::path& path, int flags, unsigned mode) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
  if (!fd) FailErrno(fmt::format("cannot open {}", path.string()), errno);
  return fd;
}

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    FailErrno(fmt::format("cannot open {}", path.string()), errno,
              errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal);
  }
  std::string content;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno(fmt::format("cannot read {}", path.string()), errno);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
  }
  return content;
}

void WriteFileAtomic(const fs::path& path, std::string_view content, unsigned mode) {
  // A unique sibling, so concurrent writers never share a temporary file.
  fs::path temp = path;
  temp += ".tmp." + RandomString(8, kAlphanumeric);
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) FailErrno(fmt::format("cannot create {}", temp.string()), errno);
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::unlink(temp.c_str());
      FailErrno(fmt::format("cannot write {}", temp.string()), err,
                err == ENOSPC ? ErrorCode::kResourceExhausted : ErrorCode::kInternal);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::rename(temp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    FailErrno(fmt::format("cannot store {}", path.string()), err);
  }
}

void RemoveAll(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    Fail(ErrorCode::kInternal, "cannot remove {}: {}", path.string(), ec.message());
  }
}

void MakeDirs(const fs::path& path, unsigned mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) Fail(ErrorCode::kInternal, "cannot create directory {}: {}", path.string(), ec.message());
  if (::chmod(path.c_str(), mode) != 0) {
    FailErrno(fmt::format("cannot chmod {}", path.string()), errno);
  }
}

RemoveOnExit::~RemoveOnExit() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int OpenInRoot(int root, const std::string& path, std::uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(
      ::syscall(SYS_openat2, root, path.empty() ? "." : path.c_str(), &how, sizeof how));
}

std::string ReadInRoot(int root, const std::string& path, std::size_t limit,
                       const std::string& what) {
  // Non-blocking to open, and a regular file only: a FIFO put there by
  // whoever owns the tree would hold the reader for ever.
  UniqueFd fd(OpenInRoot(root, path, O_RDONLY | O_NONBLOCK | O_NOCTTY));
  if (!fd) FailErrno(what + ": cannot read /" + path, errno, ErrorCode::kFailedPrecondition);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    Fail(ErrorCode::kFailedPrecondition, "{}: /{} is not a regular file", what, path);
  }
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  std::string content;
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) FailErrno(what + ": cannot read /" + path, errno, ErrorCode::kFailedPrecondition);
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > limit) {
      Fail(ErrorCode::kFailedPrecondition, "{}: /{} is over {} bytes", what, path, limit);
    }
  }
  return content;
}

}  // namespace ephemera

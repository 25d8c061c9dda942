#include "wirt/user_fs.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/fsuid.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "core/error.h"
#include "core/random.h"
#include "core/text.h"

namespace ephemera::wirt {

namespace {

constexpr int kOpenDir = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;

// Runs this thread's file access as the user (fsuid and fsgid, which the
// kernel keeps per thread; root's file capabilities are off meanwhile):
// whatever the checks miss, the kernel refuses what the user could not do,
// and what is written counts against the user's quota. Nests.
class AsUser {
 public:
  explicit AsUser(const Owner& owner) {
    if (::geteuid() != 0) return;  // not root: already no more than the user
    previous_gid_ = static_cast<gid_t>(::setfsgid(owner.gid));
    previous_uid_ = static_cast<uid_t>(::setfsuid(owner.uid));
    active_ = true;
    if (static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) != owner.uid ||
        static_cast<gid_t>(::setfsgid(static_cast<gid_t>(-1))) != owner.gid) {
      Restore();
      Fail(ErrorCode::kInternal, "cannot act as uid {} for its files", owner.uid);
    }
  }
  ~AsUser() { Restore(); }
  AsUser(const AsUser&) = delete;
  AsUser& operator=(const AsUser&) = delete;

 private:
  void Restore() {
    if (!active_) return;
    ::setfsuid(previous_uid_);
    ::setfsgid(previous_gid_);
    active_ = false;
  }
  bool active_ = false;
  uid_t previous_uid_ = 0;
  gid_t previous_gid_ = 0;
};

std::string Join(const std::string& dir, std::string_view name) {
  return dir.empty() || dir.back() == '/' ? dir + std::string(name) : dir + "/" + std::string(name);
}

std::vector<std::string_view> Components(std::string_view relative) {
  std::vector<std::string_view> parts;
  while (!relative.empty()) {
    auto slash = relative.find('/');
    std::string_view part = relative.substr(0, slash);
    if (part.empty() || part == "." || part == "..") {
      Fail(ErrorCode::kInternal, "wirt: bad relative path component in '{}'", relative);
    }
    parts.push_back(part);
    relative = slash == std::string_view::npos ? "" : relative.substr(slash + 1);
  }
  return parts;
}

// One entry's name: never a path (openat would follow links on the way).
void CheckEntryName(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos) {
    Fail(ErrorCode::kInternal, "wirt: '{}' is not a file name", name);
  }
}

// A regular file of the user's, checked before it is opened (so that no
// device, FIFO or other user's file is ever opened as root) and again on
// the descriptor (the same file, not one swapped in between).
// kNotFound if absent; kInvalidArgument saying what it is otherwise.
UniqueFd OpenUserRegularFile(const UserDir& dir, std::string_view name, int flags,
                             struct stat* st) {
  CheckEntryName(name);
  const std::string path = Join(dir.path(), name);
  const std::string file(name);
  struct stat before {};
  if (::fstatat(dir.fd(), file.c_str(), &before, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) Fail(ErrorCode::kNotFound, "{} is gone", path);
    FailErrno("cannot stat " + path, errno, ErrorCode::kInvalidArgument);
  }
  if (S_ISLNK(before.st_mode)) Fail(ErrorCode::kInvalidArgument, "{} is a symbolic link", path);
  if (!S_ISREG(before.st_mode)) {
    Fail(ErrorCode::kInvalidArgument, "{} is not a regular file (a FIFO, device or directory)",
         path);
  }
  if (std::string why = CheckUserOwned(before, dir.owner(), path); !why.empty()) {
    Fail(ErrorCode::kInvalidArgument, "{}", why);
  }
  UniqueFd fd(
      ::openat(dir.fd(), file.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!fd) FailErrno("cannot open " + path, errno, ErrorCode::kInvalidArgument);
  if (::fstat(fd.get(), st) != 0) FailErrno("cannot stat " + path, errno);
  if (st->st_dev != before.st_dev || st->st_ino != before.st_ino || !S_ISREG(st->st_mode) ||
      st->st_uid != dir.owner().uid) {
    Fail(ErrorCode::kInvalidArgument, "{} changed while it was opened", path);
  }
  return fd;
}

// Opens one directory component below `parent`, or none when absent.
std::optional<UserDir> OpenChildDir(int parent, const std::string& parent_path,
                                    std::string_view name, const Owner& owner) {
  const std::string path = Join(parent_path, name);
  CheckEntryName(name);
  int fd = ::openat(parent, std::string(name).c_str(), kOpenDir);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return std::nullopt;
    // O_DIRECTORY reports a symlink as ENOTDIR, before O_NOFOLLOW's ELOOP.
    struct stat st {};
    if (err == ELOOP ||
        (err == ENOTDIR &&
         ::fstatat(parent, std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISLNK(st.st_mode))) {
      Fail(ErrorCode::kPermissionDenied, "{} is a symbolic link", path);
    }
    if (err == ENOTDIR) Fail(ErrorCode::kFailedPrecondition, "{} is not a directory", path);
    FailErrno("cannot open " + path, err);
  }
  UniqueFd dir(fd);
  struct stat st {};
  if (::fstat(dir.get(), &st) != 0) FailErrno("cannot stat " + path, errno);
  if (std::string why = CheckUserOwned(st, owner, path); !why.empty()) {
    Fail(ErrorCode::kPermissionDenied, "{}", why);
  }
  return UserDir(std::move(dir), owner, path);
}

// A name for a file being written, unique enough that O_EXCL rarely fails.
std::string ScratchName(std::string_view name) {
  return fmt::format(".{}.wirt-{}", name, RandomString(10, kAlphanumeric));
}

void WriteAll(int fd, std::string_view content, const std::string& what) {
  while (!content.empty()) {
    ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno("cannot write " + what, errno);
    }
    content.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Packs `content` as a tar.gz holding one file, `name`.
std::string PackTgz(std::string_view name, std::string_view content, time_t mtime) {
  std::string out;
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            archive_write_free);
  auto write_cb = [](archive*, void* data, const void* buf, size_t n) -> la_ssize_t {
    static_cast<std::string*>(data)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  if (archive_write_add_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_open(a.get(), &out, nullptr, write_cb, nullptr) != ARCHIVE_OK) {
    Fail(ErrorCode::kInternal, "cannot start a tar.gz: {}", archive_error_string(a.get()));
  }
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                      archive_entry_free);
  archive_entry_set_pathname(entry.get(), std::string(name).c_str());
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  archive_entry_set_mtime(entry.get(), mtime, 0);
  if (archive_write_header(a.get(), entry.get()) != ARCHIVE_OK ||
      archive_write_data(a.get(), content.data(), content.size()) !=
          static_cast<la_ssize_t>(content.size()) ||
      archive_write_close(a.get()) != ARCHIVE_OK) {
    Fail(ErrorCode::kInternal, "cannot pack {}: {}", name, archive_error_string(a.get()));
  }
  return out;
}

}  // namespace

std::string CheckUserOwned(const struct stat& st, const Owner& owner, std::string_view what) {
  if (st.st_uid != owner.uid) {
    return fmt::format("{} belongs to uid {}, not to its user (uid {})", what, st.st_uid,
                       owner.uid);
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return fmt::format("{} is group- or world-writable (mode {:04o}); others could change it", what,
                       st.st_mode & 07777);
  }
  return {};
}

UserDir OpenHome(const std::string& home, Owner owner) {
  if (home.empty() || home[0] != '/') {
    Fail(ErrorCode::kFailedPrecondition, "home '{}' is not an absolute path", home);
  }
  // The path up to the home is the administrator's (/home); the home itself
  // must be the user's and not a symlink.
  std::string parent = home.substr(0, home.find_last_of('/'));
  std::string name = home.substr(home.find_last_of('/') + 1);
  if (name.empty() || name == "." || name == "..") {
    Fail(ErrorCode::kFailedPrecondition, "home '{}' does not name a directory", home);
  }
  UniqueFd parent_fd(::open(parent.empty() ? "/" : parent.c_str(), kOpenDir & ~O_NOFOLLOW));
  if (!parent_fd) FailErrno("cannot open " + parent, errno, ErrorCode::kFailedPrecondition);
  AsUser as(owner);
  auto dir = OpenChildDir(parent_fd.get(), parent, name, owner);
  if (!dir) Fail(ErrorCode::kNotFound, "home {} does not exist", home);
  return std::move(*dir);
}

std::optional<UserDir> OpenUserDir(const UserDir& base, std::string_view relative) {
  AsUser as(base.owner());
  int parent = base.fd();
  std::string path = base.path();
  std::optional<UserDir> current;
  for (std::string_view part : Components(relative)) {
    current = OpenChildDir(parent, path, part, base.owner());
    if (!current) return std::nullopt;
    parent = current->fd();
    path = current->path();
  }
  if (!current) Fail(ErrorCode::kInternal, "wirt: empty relative path");
  return current;
}

UserDir MakeUserDir(const UserDir& base, std::string_view relative) {
  AsUser as(base.owner());
  int parent = base.fd();
  std::string path = base.path();
  std::optional<UserDir> current;
  for (std::string_view part : Components(relative)) {
    const std::string name(part);
    struct stat st {};
    if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      // Made (as the user) under a scratch name with its final mode, then
      // renamed into place: no one, another thread of ours included, sees
      // it half made.
      const std::string scratch = ScratchName(name);
      if (::mkdirat(parent, scratch.c_str(), 0700) != 0) {
        FailErrno("cannot create " + Join(path, part), errno);
      }
      UniqueFd made(::openat(parent, scratch.c_str(), kOpenDir));
      if (!made || ::fstat(made.get(), &st) != 0 ||
          ::fchown(made.get(), base.owner().uid, base.owner().gid) != 0 ||
          ::fchmod(made.get(), 0755) != 0) {
        int err = errno;
        ::unlinkat(parent, scratch.c_str(), AT_REMOVEDIR);
        FailErrno("cannot give " + Join(path, part) + " to its user", err);
      }
      if (::renameat2(parent, scratch.c_str(), parent, name.c_str(), RENAME_NOREPLACE) != 0) {
        int err = errno;
        ::unlinkat(parent, scratch.c_str(), AT_REMOVEDIR);
        if (err != EEXIST) FailErrno("cannot create " + Join(path, part), err);
      }
    }
    current = OpenChildDir(parent, path, part, base.owner());
    if (!current) Fail(ErrorCode::kFailedPrecondition, "{} vanished", Join(path, part));
    parent = current->fd();
    path = current->path();
  }
  if (!current) Fail(ErrorCode::kInternal, "wirt: empty relative path");
  return std::move(*current);
}

std::vector<DirEntry> ListDir(const UserDir& dir, std::size_t max_entries) {
  AsUser as(dir.owner());
  // fdopendir takes the descriptor over: give it a duplicate.
  int dup = ::fcntl(dir.fd(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) FailErrno("cannot list " + dir.path(), errno);
  struct CloseDir {
    void operator()(DIR* d) const { ::closedir(d); }
  };
  std::unique_ptr<DIR, CloseDir> d(::fdopendir(dup));
  if (!d) {
    ::close(dup);
    FailErrno("cannot list " + dir.path(), errno);
  }
  ::rewinddir(d.get());
  std::vector<DirEntry> entries;
  while (struct dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (entries.size() == max_entries) {
      Fail(ErrorCode::kResourceExhausted, "{} holds more than {} entries; it is not read",
           dir.path(), max_entries);
    }
    DirEntry entry;
    entry.name = std::string(name);
    if (::fstatat(dir.fd(), e->d_name, &entry.st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    entry.type = S_ISREG(entry.st.st_mode)   ? EntryType::kFile
                 : S_ISDIR(entry.st.st_mode) ? EntryType::kDirectory
                                             : EntryType::kOther;
    entries.push_back(std::move(entry));
  }
  return entries;
}

ReadResult ReadUserFile(const UserDir& dir, std::string_view name, std::size_t max_bytes) {
  AsUser as(dir.owner());
  const std::string path = Join(dir.path(), name);
  ReadResult result;
  UniqueFd fd = OpenUserRegularFile(dir, name, O_RDONLY, &result.st);
  if (static_cast<std::uint64_t>(result.st.st_size) > max_bytes) {
    Fail(ErrorCode::kInvalidArgument, "{} has {} bytes (at most {})", path, result.st.st_size,
         max_bytes);
  }
  result.content.resize(max_bytes + 1);
  std::size_t got = 0;
  while (got < result.content.size()) {
    ssize_t n = ::read(fd.get(), result.content.data() + got, result.content.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno("cannot read " + path, errno, ErrorCode::kInvalidArgument);
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > max_bytes) {
    Fail(ErrorCode::kInvalidArgument, "{} grew past {} bytes while read", path, max_bytes);
  }
  result.content.resize(got);
  return result;
}

bool BeingWritten(const UserDir& dir, std::string_view name) {
  AsUser as(dir.owner());
  struct stat st {};
  UniqueFd fd;
  try {
    fd = OpenUserRegularFile(dir, name, O_RDONLY, &st);
  } catch (const Error&) {
    return false;  // not a file to take: the caller finds out why
  }
  if (::fcntl(fd.get(), F_SETLEASE, F_RDLCK) != 0) return errno == EAGAIN;
  ::fcntl(fd.get(), F_SETLEASE, F_UNLCK);
  return false;
}

void WriteUserFile(const UserDir& dir, std::string_view name, std::string_view content,
                   unsigned mode) {
  AsUser as(dir.owner());
  CheckEntryName(name);
  const std::string path = Join(dir.path(), name);
  const std::string scratch = ScratchName(name);
  UniqueFd fd(::openat(dir.fd(), scratch.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600));
  if (!fd) FailErrno("cannot create a file in " + dir.path(), errno);
  try {
    if (::fchown(fd.get(), dir.owner().uid, dir.owner().gid) != 0 ||
        ::fchmod(fd.get(), mode) != 0) {
      FailErrno("cannot give " + path + " to its user", errno);
    }
    WriteAll(fd.get(), content, path);
    if (::renameat(dir.fd(), scratch.c_str(), dir.fd(), std::string(name).c_str()) != 0) {
      FailErrno("cannot put " + path + " in place", errno);
    }
  } catch (...) {
    ::unlinkat(dir.fd(), scratch.c_str(), 0);
    throw;
  }
}

void AppendUserFile(const UserDir& dir, std::string_view name, std::string_view content) {
  AsUser as(dir.owner());
  struct stat st {};
  UniqueFd fd;
  try {
    fd = OpenUserRegularFile(dir, name, O_WRONLY | O_APPEND, &st);
  } catch (const Error&) {
    // Absent, or not a file that may be appended to: start a new one.
  }
  if (fd && st.st_nlink == 1) {
    WriteAll(fd.get(), content, Join(dir.path(), name));
    return;
  }
  WriteUserFile(dir, name, content, 0644);
}

void RemoveUserFile(const UserDir& dir, std::string_view name) {
  AsUser as(dir.owner());
  CheckEntryName(name);
  if (::unlinkat(dir.fd(), std::string(name).c_str(), 0) != 0 && errno != ENOENT) {
    FailErrno("cannot remove " + Join(dir.path(), name), errno);
  }
}

std::string MoveUserFile(const UserDir& from, std::string_view name, const UserDir& to,
                         std::string_view new_name) {
  AsUser as(from.owner());
  CheckEntryName(name);
  CheckEntryName(new_name);
  const std::string source(name);
  // Only files move (a folder of the user's is theirs to move).
  struct stat st {};
  if (::fstatat(from.fd(), source.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) Fail(ErrorCode::kNotFound, "{} is gone", Join(from.path(), name));
    FailErrno("cannot stat " + Join(from.path(), name), errno);
  }
  if (S_ISDIR(st.st_mode)) {
    Fail(ErrorCode::kInvalidArgument, "{} is a folder", Join(from.path(), name));
  }
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::string target =
        attempt == 0 ? std::string(new_name) : fmt::format("{}.{}", new_name, attempt);
    if (::renameat2(from.fd(), source.c_str(), to.fd(), target.c_str(), RENAME_NOREPLACE) == 0) {
      return target;
    }
    if (errno != EEXIST) {
      FailErrno(
          fmt::format("cannot move {} to {}", Join(from.path(), name), Join(to.path(), target)),
          errno);
    }
  }
  Fail(ErrorCode::kResourceExhausted, "no free name for {} in {}", new_name, to.path());
}

bool RotateUserLog(const UserDir& dir, std::string_view name, std::uint64_t max_bytes,
                   unsigned keep) {
  AsUser as(dir.owner());
  struct stat st {};
  const std::string file(name);
  if (::fstatat(dir.fd(), file.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) <= max_bytes) {
    return false;
  }
  // Read what is there (bounded: a log someone else inflated is cut).
  ReadResult log;
  try {
    log = ReadUserFile(dir, name, max_bytes * 4);
  } catch (const Error&) {
    RemoveUserFile(dir, name);  // not a log this daemon can keep: start afresh
    return true;
  }
  auto rotated = [&](unsigned k) { return fmt::format("{}.{}.tgz", name, k); };
  if (keep == 0) {
    RemoveUserFile(dir, name);
    return true;
  }
  RemoveUserFile(dir, rotated(keep));
  for (unsigned k = keep; k > 1; --k) {
    if (::renameat(dir.fd(), rotated(k - 1).c_str(), dir.fd(), rotated(k).c_str()) != 0 &&
        errno != ENOENT) {
      FailErrno("cannot rotate " + Join(dir.path(), rotated(k - 1)), errno);
    }
  }
  WriteUserFile(dir, rotated(1), PackTgz(name, log.content, log.st.st_mtime), 0644);
  WriteUserFile(dir, name, "", 0644);
  return true;
}

}  // namespace ephemera::wirt

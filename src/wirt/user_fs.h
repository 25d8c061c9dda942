// File access in a user's home on that user's behalf, by a daemon that
// runs as root. Every path is walked one component at a time from a
// directory descriptor with O_NOFOLLOW, and every directory and file is
// checked with fstat on the descriptor that will be used: owned by the
// user, not group- or world-writable. Files the daemon writes are made
// under a fresh name (O_EXCL) and renamed into place, so a name the user
// planted (a symlink, a hard link to someone else's file) is replaced,
// never written through. Nothing here blocks on a FIFO or a device.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/unique_fd.h"

namespace ephemera::wirt {

struct Owner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// A directory of the user's that passed the checks, open by descriptor.
class UserDir {
 public:
  UserDir() = default;
  UserDir(UniqueFd fd, Owner owner, std::string path)
      : fd_(std::move(fd)), owner_(owner), path_(std::move(path)) {}
  int fd() const { return fd_.get(); }
  const Owner& owner() const { return owner_; }
  const std::string& path() const { return path_; }  // for messages only
  bool valid() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
  Owner owner_;
  std::string path_;
};

// Why a path was refused (owner, mode, type), for the user's log.
std::string CheckUserOwned(const struct stat& st, const Owner& owner, std::string_view what);

// Opens `relative` (components separated by '/', none of them "." or
// "..") below `base`, each component a directory of the user's. None if a
// component does not exist; kPermissionDenied saying which component is
// not the user's or is a symlink; kFailedPrecondition if not a directory.
std::optional<UserDir> OpenUserDir(const UserDir& base, std::string_view relative);
// The same, creating missing components (owned by the user, mode 0755).
UserDir MakeUserDir(const UserDir& base, std::string_view relative);
// The user's home itself (absolute path, opened from "/"; only its last
// component must be the user's).
UserDir OpenHome(const std::string& home, Owner owner);

enum class EntryType { kFile, kDirectory, kOther };
struct DirEntry {
  std::string name;
  EntryType type = EntryType::kOther;
  struct stat st {};
};
// The entries of a directory (not . and ..), stat'ed without following;
// kResourceExhausted past `max_entries` (a tree no one reads for long).
std::vector<DirEntry> ListDir(const UserDir& dir, std::size_t max_entries = 4096);

// A request file's content: a regular file of the user's, not group- or
// world-writable, of at most `max_bytes`. kInvalidArgument saying what is
// wrong (a FIFO, too large, owned by another user ...).
struct ReadResult {
  std::string content;
  struct stat st {};
};
ReadResult ReadUserFile(const UserDir& dir, std::string_view name, std::size_t max_bytes);

// Whether some process still has `name` open for writing (a request being
// written): a read lease cannot be had then. False where leases are not
// supported (the request is then taken as it is).
bool BeingWritten(const UserDir& dir, std::string_view name);

// Writes `content` to `name` in `dir` (mode `mode`, owned by the user)
// through a fresh file renamed over whatever `name` was.
void WriteUserFile(const UserDir& dir, std::string_view name, std::string_view content,
                   unsigned mode);
// Appends to `name`, creating it (mode 0644): an existing file must be a
// regular file of the user's with one link, else it is replaced by a new
// one holding only `content`.
void AppendUserFile(const UserDir& dir, std::string_view name, std::string_view content);
// Removes `name` (never follows it); absent is fine.
void RemoveUserFile(const UserDir& dir, std::string_view name);
// Moves the file (anything but a folder) `name` from `from` to
// `to`/`new_name` without replacing anything there; on a name clash tries
// `new_name`.1, .2 ... Returns the name used. kNotFound if it is gone.
std::string MoveUserFile(const UserDir& from, std::string_view name, const UserDir& to,
                         std::string_view new_name);

// Rotates `name` in `dir` once it passes `max_bytes`: NAME.(k).tgz become
// NAME.(k+1).tgz (the last dropped after `keep`), NAME is packed into
// NAME.1.tgz (tar + gzip) and emptied. Returns whether it rotated.
bool RotateUserLog(const UserDir& dir, std::string_view name, std::uint64_t max_bytes,
                   unsigned keep);

}  // namespace ephemera::wirt

// Small file-system helpers whose failures carry the path in the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/unique_fd.h"

namespace ephemera {

// open(2) with O_CLOEXEC; failure names the path (kNoSpace, kNotFound, ... by errno).
UniqueFd OpenFile(const std::filesystem::path& path, int flags, unsigned mode = 0600);

std::string ReadFile(const std::filesystem::path& path);
// Writes to a temporary sibling, fsyncs and renames it over `path`, so
// readers see the old or the new content, never a torn one.
void WriteFileAtomic(const std::filesystem::path& path, std::string_view content,
                     unsigned mode = 0600);
// Removes a file or a whole tree; absent is success (idempotent).
void RemoveAll(const std::filesystem::path& path);
// Removes a scratch file or tree when it goes out of scope, on every path
// out; a failure to remove is ignored (a destructor cannot report it).
class RemoveOnExit {
 public:
  explicit RemoveOnExit(std::filesystem::path path) : path_(std::move(path)) {}
  ~RemoveOnExit();
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};
// Creates a directory (and parents) with `mode` on the last component.
void MakeDirs(const std::filesystem::path& path, unsigned mode = 0700);

// Opens `path` (relative) below the directory `root` as if it were "/":
// symlinks, absolute ones too, and ".." never lead out of it. -1 and errno
// on failure.
int OpenInRoot(int root, const std::string& path, std::uint64_t flags);

// The content of file `path` below `root` (resolved as OpenInRoot does);
// kFailedPrecondition naming `what` and the path when it cannot be read or
// is over `limit` bytes.
std::string ReadInRoot(int root, const std::string& path, std::size_t limit,
                       const std::string& what);

}  // namespace ephemera

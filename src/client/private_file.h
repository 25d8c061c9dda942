// Small files of secrets under ConfigDir(): written whole (temp file, fsync,
// rename) with mode 0600, and read-modify-written under an flock so that
// concurrent ephemera processes lose nothing.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace ephemera::client {

std::filesystem::path ConfigDir();  // $XDG_CONFIG_HOME/ephemera or ~/.config/ephemera

// Holds an exclusive flock on `file`.lock (creating the directory 0700).
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& file);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// The file's content, or nullopt when it does not exist; throws when it
// exists but cannot be read.
std::optional<std::string> ReadPrivateFile(const std::filesystem::path& file);

// Replaces the file atomically with `text`, mode 0600 from the start.
void WritePrivateFile(const std::filesystem::path& file, const std::string& text);

}  // namespace ephemera::client

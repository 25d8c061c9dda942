// Each image's root filesystem mounted read-only once, shared by all the
// containers made from it, and unmounted when none has used it for a while
// (a create right after a destroy then finds it still mounted).
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

namespace ephemera {

class ImageMounts {
 public:
  ImageMounts(std::filesystem::path dir, std::chrono::seconds idle);

  // The read-only mount of `rootfs` (an ext4 file), mounted now if it is
  // not yet, counted as used until Release.
  std::filesystem::path Acquire(const std::filesystem::path& rootfs);
  void Release(const std::filesystem::path& rootfs);
  // Unmounts what has been unused for the idle time (`force`: at once);
  // also mounts left by an earlier run that nothing holds.
  void Sweep(bool force = false);

 private:
  struct Entry {
    std::filesystem::path mount_point;
    std::size_t users = 0;
    std::chrono::steady_clock::time_point last_used;
  };
  std::filesystem::path MountPointFor(const std::filesystem::path& rootfs) const;

  std::filesystem::path dir_;
  std::chrono::seconds idle_;
  mutable std::mutex mutex_;
  std::map<std::filesystem::path, Entry> entries_;  // by the image file's path
};

}  // namespace ephemera

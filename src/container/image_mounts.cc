#include "container/image_mounts.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "container/mounts.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"

namespace ephemera {

namespace fs = std::filesystem;

namespace {

bool IsMountPoint(const fs::path& path) {
  struct stat self {
  }, parent{};
  if (::lstat(path.c_str(), &self) != 0 || ::lstat(path.parent_path().c_str(), &parent) != 0) {
    return false;
  }
  return self.st_dev != parent.st_dev;
}

}  // namespace

ImageMounts::ImageMounts(fs::path dir, std::chrono::seconds idle)
    : dir_(std::move(dir)), idle_(idle) {
  MakeDirs(dir_, 0700);
}

fs::path ImageMounts::MountPointFor(const fs::path& rootfs) const {
  return dir_ / Sha256Hex(rootfs.string()).substr(0, 16);
}

fs::path ImageMounts::Acquire(const fs::path& rootfs) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(rootfs);
  if (it == entries_.end()) {
    const fs::path point = MountPointFor(rootfs);
    // Still mounted by an earlier run of the daemon: used as it is.
    if (!IsMountPoint(point)) {
      MakeDirs(point, 0755);
      MountImageReadOnly(rootfs, point);
      spdlog::info("container images: {} mounted read-only at {}", rootfs.string(), point.string());
    }
    it = entries_.emplace(rootfs, Entry{point, 0, {}}).first;
  }
  ++it->second.users;
  it->second.last_used = std::chrono::steady_clock::now();
  return it->second.mount_point;
}

void ImageMounts::Release(const fs::path& rootfs) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(rootfs);
  if (it == entries_.end() || it->second.users == 0) return;
  --it->second.users;
  it->second.last_used = std::chrono::steady_clock::now();
}

void ImageMounts::Sweep(bool force) {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    if (e.users > 0 || (!force && now - e.last_used < idle_)) {
      ++it;
      continue;
    }
    try {
      Unmount(e.mount_point);
      fs::remove(e.mount_point);
      spdlog::info("container images: unmounted {} (unused)", it->first.string());
      it = entries_.erase(it);
    } catch (const std::exception& ex) {
      spdlog::warn("container images: cannot unmount {}: {}", e.mount_point.string(), ex.what());
      ++it;
    }
  }
  // Mount points no entry names: left by an earlier run, unused since.
  std::error_code ec;
  for (const auto& child : fs::directory_iterator(dir_, ec)) {
    bool known = false;
    for (const auto& [rootfs, e] : entries_) known = known || e.mount_point == child.path();
    if (known) continue;
    try {
      Unmount(child.path());
      fs::remove(child.path());
    } catch (const std::exception& ex) {
      spdlog::warn("container images: cannot remove stale {}: {}", child.path().string(),
                   ex.what());
    }
  }
}

}  // namespace ephemera

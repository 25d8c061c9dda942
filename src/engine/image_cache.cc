// The image directory's size limit (pull.cache_max_mib). Only what can come
// back by itself is evicted: folders and blobs prune would remove, and
// images a create imports again on demand (an images: entry, a
// --kernel/--rootfs pair). Built images and images pulled by hand under a
// name of the user's choosing stay until `image rm`.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/event_types.h"
#include "engine/engine.h"

namespace ephemera {

namespace fs = std::filesystem;

namespace {

// Bytes allocated under `dir` (sparse root disks count as what they hold).
std::uint64_t AllocatedBytes(const fs::path& dir) {
  std::uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec),
       end;
       it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0)
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

std::int64_t ModifiedAt(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec);
}

}  // namespace

void Engine::TouchImage(const std::string& name) {
  // The folder the name points at (stat and utimensat follow the link).
  if (::utimensat(AT_FDCWD, (images_.dir() / name).c_str(), nullptr, 0) != 0) {
    spdlog::debug("image {}: cannot mark it used: {}", name, std::strerror(errno));
  }
}

std::uint64_t Engine::EnforceImageCacheLimit(const std::string& keep) {
  std::uint64_t used = AllocatedBytes(images_.dir());
  if (!options_.image_cache_max_mib) return used;
  const std::uint64_t limit = *options_.image_cache_max_mib << 20;
  if (used <= limit) return used;
  PruneImages();
  used = AllocatedBytes(images_.dir());
  std::set<std::string> in_use;
  for (const Sandbox& s : store_.List()) in_use.insert(s.spec.image);
  // One used within the last minute may be a create's that has not
  // recorded its sandbox yet.
  const std::int64_t recent = NowUnix() - 60;
  std::vector<std::pair<std::int64_t, std::string>> evictable;
  for (const std::string& name : images_.List()) {
    const bool reimportable = options_.configured_images.count(name) || name.starts_with("pair-");
    const std::int64_t used_at = ModifiedAt(images_.dir() / name);
    if (name != keep && reimportable && !in_use.count(name) && used_at < recent) {
      evictable.emplace_back(used_at, name);
    }
  }
  std::sort(evictable.begin(), evictable.end());
  for (const auto& [when, name] : evictable) {
    if (used <= limit) break;
    try {
      RemoveImage(name);  // refuses one a create just started using
    } catch (const Error& e) {
      spdlog::info("image cache: keeping {}: {}", name, e.what());
      continue;
    }
    spdlog::info("image cache: evicted {} (over pull.cache_max_mib = {} MiB)", name,
                 *options_.image_cache_max_mib);
    store_.AddEvent(event_type::kImageEvicted, "", name);
    oci::PruneBlobStore(images_.dir(), options_.blob_min_age);
    used = AllocatedBytes(images_.dir());
  }
  return used;
}

}  // namespace ephemera

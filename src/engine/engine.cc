#include "engine/engine.h"
#include "core/event_types.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "core/error.h"

namespace ephemera {

Engine::Engine(EngineOptions options, Store& store, ImageCatalog& images, EngineDrivers drivers,
               SandboxNetworks& networks, Provisioner& provisioner)
    : options_(std::move(options)),
      store_(store),
      images_(images),
      drivers_(std::move(drivers)),
      networks_(networks),
      provisioner_(provisioner),
      create_slots_(static_cast<std::ptrdiff_t>(
          std::clamp<std::size_t>(options_.max_parallel_creates, 1, 1024))),
      started_(std::chrono::steady_clock::now()) {
  RegisterMetrics();
  // A VM that stops by itself is reaped at once, not at the next pass.
  for (auto& [name, driver] : drivers_.by_name) {
    driver->OnOutOfMemory([this](const SandboxId& id, std::uint64_t kills) {
      try {
        store_.AddEvent(
            event_type::kOutOfMemory, id.str(),
            fmt::format("the OOM killer ended {} process(es) at its memory limit", kills));
      } catch (const Error& e) {
        spdlog::warn("sandbox {}: out-of-memory event not recorded: {}", id.str(), e.what());
      }
    });
    driver->OnStopped([this](const SandboxId&) {
      {
        std::lock_guard lock(reaper_mutex_);
        reap_now_ = true;
      }
      reaper_wake_.notify_all();
    });
  }
}

VmDriver& Engine::DriverOf(const Sandbox& sandbox) {
  auto it = drivers_.by_name.find(sandbox.driver);
  if (it == drivers_.by_name.end()) {
    Fail(ErrorCode::kUnavailable, "sandbox {} runs on driver '{}', which this daemon does not run",
         sandbox.id.str(), sandbox.driver);
  }
  return *it->second;
}

std::string Engine::DescribeXml(const Sandbox& sandbox) {
  try {
    return DriverOf(sandbox).DescribeXml(sandbox.id);
  } catch (const Error& e) {
    spdlog::debug("sandbox {}: no description: {}", sandbox.id.str(), e.what());
    return {};
  }
}

VmDriver& Engine::DriverFor(SandboxKind kind, std::string* name) {
  const std::string& wanted = kind == SandboxKind::kVm ? drivers_.vm : drivers_.container;
  auto it = wanted.empty() ? drivers_.by_name.end() : drivers_.by_name.find(wanted);
  if (it == drivers_.by_name.end()) {
    Fail(ErrorCode::kInvalidArgument, "this daemon runs no {} sandboxes", KindName(kind));
  }
  *name = it->first;
  return *it->second;
}

Engine::~Engine() {
  for (auto& [name, driver] : drivers_.by_name) {
    driver->OnStopped({});
    driver->OnOutOfMemory({});
  }
  {
    std::lock_guard lock(reaper_mutex_);
    stopping_ = true;
  }
  reaper_wake_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  {
    std::lock_guard lock(pool_mutex_);
    pool_stopping_ = true;
  }
  pool_wake_.notify_all();
  if (pool_thread_.joinable()) pool_thread_.join();
}

bool Engine::Hidden(const SandboxId& id) {
  std::lock_guard lock(bookkeeping_mutex_);
  return unrecorded_.count(id) > 0;
}

void Engine::FillRunning(Sandbox& sandbox) {
  auto it = drivers_.by_name.find(sandbox.driver);
  if (it == drivers_.by_name.end()) return;  // unknown here: no claim either way
  try {
    sandbox.running = it->second->Inspect(sandbox.id).state == VmState::kRunning;
  } catch (const Error& e) {
    // kNotFound: no VM (yet, or any more). Anything else (libvirt away): unknown.
    if (e.code() == ErrorCode::kNotFound) sandbox.running = false;
  }
}

void Engine::NoteEvent(std::string_view kind, const SandboxId& id, const std::string& detail) {
  try {
    store_.AddEvent(kind, id.str(), detail);
  } catch (const Error& e) {
    spdlog::warn("sandbox {}: event '{}' ({}) not logged: {}", id.str(), kind, detail, e.what());
  }
}

std::optional<Sandbox> Engine::Get(const SandboxId& id) {
  if (Hidden(id)) return std::nullopt;
  std::optional<Sandbox> sandbox = store_.Get(id);
  if (sandbox && sandbox->owner == kPoolOwner) return std::nullopt;  // nobody's yet
  if (sandbox) FillRunning(*sandbox);
  return sandbox;
}

std::vector<Sandbox> Engine::ListRecorded() {
  std::vector<Sandbox> all = store_.List();
  std::lock_guard lock(bookkeeping_mutex_);
  std::erase_if(all, [this](const Sandbox& s) { return unrecorded_.count(s.id) > 0; });
  return all;
}

std::vector<Sandbox> Engine::List() {
  std::vector<Sandbox> all = ListRecorded();
  std::erase_if(all, [](const Sandbox& s) { return s.owner == kPoolOwner; });
  for (Sandbox& s : all) FillRunning(s);
  return all;
}

std::vector<ImageCatalog::Entry> Engine::Images() { return images_.ListLoaded(); }

ImageDetails Engine::InspectImage(const std::string& name) {
  ImageDetails details{images_.Get(name), {}, 0};
  for (const Sandbox& s : ListRecorded()) {
    if (s.spec.image == name) details.used_by.push_back(s.id);
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(details.image.dir, ec)) {
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) == 0) {
      details.disk_bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
  }
  return details;
}

void Engine::RemoveImage(const std::string& name) {
  for (const Sandbox& s : store_.List()) {
    if (s.spec.image == name) {
      Fail(ErrorCode::kFailedPrecondition, "image '{}' is in use by sandbox {}", name, s.id.str());
    }
  }
  images_.Remove(name);
  spdlog::info("image {}: removed", name);
}

std::vector<std::string> Engine::PruneImages() {
  std::set<std::string> in_use;
  for (const Sandbox& s : store_.List()) in_use.insert(s.spec.image);
  // A sandbox boots from the folder its image name pointed at when it was
  // made, which may be an older one: keep every folder of a name in use.
  auto removed = images_.Prune([&](const std::string& folder) {
    return in_use.count(folder.substr(0, folder.rfind('-'))) > 0;
  });
  for (const auto& f : removed) spdlog::info("image folder {}: pruned", f);
  // Then the registry blobs only pruned folders needed.
  for (const auto& b : oci::PruneBlobStore(images_.dir(), options_.blob_min_age)) {
    spdlog::info("blob {}: pruned", b);
  }
  return removed;
}

oci::ImportResult Engine::ImportImage(const ImageImport& import,
                                      const oci::PullProgressFn& progress) {
  oci::ImportRequest request;
  request.name = import.name;
  if (import.kernel.empty() && import.rootfs.empty()) {
    auto it = options_.configured_images.find(import.name);
    if (it == options_.configured_images.end()) {
      Fail(ErrorCode::kNotFound,
           "image '{}' is not configured under images:; give its kernel and rootfs references",
           import.name.substr(0, 64));
    }
    request.kernel = it->second.kernel;
    request.rootfs = it->second.rootfs;
    request.headroom_mib = it->second.headroom_mib;
  } else {
    if (!import.kernel.empty()) request.kernel = oci::ImageReference::Parse(import.kernel);
    request.rootfs = oci::ImageReference::Parse(import.rootfs);
  }
  // A rootfs with its own kernel boots with ephemera's initrd: the default
  // image's, with that kernel's modules.
  request.base_initrd = images_.dir() / "default" / "initrd.img";
  if (!request.kernel && !std::filesystem::exists(request.base_initrd)) {
    Fail(ErrorCode::kFailedPrecondition,
         "image '{}': a rootfs that boots its own kernel needs ephemera's initrd, from the "
         "default image ({} is missing: images/default/build.sh makes it)",
         import.name, request.base_initrd.string());
  }
  if (import.headroom_mib) request.headroom_mib = static_cast<std::uint64_t>(*import.headroom_mib);
  request.registry = options_.registry;
  request.progress = [&](const oci::PullProgress& p) {
    if (progress) progress(p);
    if (p.layer != 0 && p.bytes == p.total) {
      spdlog::info("image {}: {} layer {}/{}: {} bytes{}", import.name, p.reference, p.layer,
                   p.layers, p.total, p.cached ? " (in the blob store)" : "");
    }
  };
  CheckFreeDisk();
  if (options_.image_cache_max_mib) {
    const std::uint64_t used = EnforceImageCacheLimit(import.name);
    if (used > (*options_.image_cache_max_mib << 20)) {
      Fail(ErrorCode::kNoSpace,
           "image '{}': the image cache holds {} MiB, over pull.cache_max_mib = {} MiB, in "
           "images that are in use or were pulled by name (image rm frees them)",
           import.name, used >> 20, *options_.image_cache_max_mib);
    }
  }
  oci::ImportResult result = oci::ImportImage(images_.dir(), request);
  // The files' digests, computed now (the import is long anyway) rather
  // than by the first create that boots the image.
  images_.Get(import.name);
  TouchImage(import.name);
  if (options_.image_cache_max_mib) {
    const std::uint64_t used = EnforceImageCacheLimit(import.name);
    if (used > (*options_.image_cache_max_mib << 20)) {
      spdlog::warn("image cache: {} MiB after importing {}, over pull.cache_max_mib = {} MiB",
                   used >> 20, import.name, *options_.image_cache_max_mib);
    }
  }
  spdlog::info("image {}: {} from {} and {} ({})", import.name,
               result.cached ? "already imported" : "imported",
               request.kernel ? request.kernel->str() : "its own kernel", request.rootfs.str(),
               result.dir.string());
  store_.AddEvent(event_type::kImageImported, "", import.name);
  return result;
}

std::size_t Engine::PendingRecordRemovals() {
  std::lock_guard lock(bookkeeping_mutex_);
  return unrecorded_.size();
}

EngineStatus Engine::Status() {
  EngineStatus status{
      store_.Count(),
      options_.max_sandboxes,
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count(),
      {},
      {},
      {}};
  for (const auto& [name, driver] : drivers_.by_name) status.drivers[name] = driver->Health();
  status.pools = PoolStatuses();
  std::lock_guard lock(pool_mutex_);
  for (const auto& [family, state] : snapshot_families_) status.snapshots.push_back(state.status);
  return status;
}

std::vector<PoolStatus> Engine::PoolStatuses() {
  std::lock_guard lock(pool_mutex_);
  std::vector<PoolStatus> pools;
  for (const Pool& pool : pools_) {
    pools.push_back({pool.spec, pool.ready.size(), pool.hits, pool.misses});
  }
  return pools;
}

}  // namespace ephemera

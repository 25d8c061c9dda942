#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace ephemera {

Engine::Engine(EngineOptions options, Store& store, ImageCatalog& images, VmDriver& vms,
               SandboxNetworks& networks, Provisioner& provisioner)
    : options_(std::move(options)),
      store_(store),
      images_(images),
      vms_(vms),
      networks_(networks),
      provisioner_(provisioner),
      create_slots_(static_cast<std::ptrdiff_t>(
          std::clamp<std::size_t>(options_.max_parallel_creates, 1, 1024))),
      started_(std::chrono::steady_clock::now()) {}

Engine::~Engine() {
  {
    std::lock_guard lock(reaper_mutex_);
    stopping_ = true;
  }
  reaper_wake_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

std::optional<Sandbox> Engine::Get(const SandboxId& id) { return store_.Get(id); }

std::vector<Sandbox> Engine::List() { return store_.List(); }

EngineStatus Engine::Status() {
  return EngineStatus{
      store_.Count(), options_.max_sandboxes,
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count()};
}

}  // namespace ephemera

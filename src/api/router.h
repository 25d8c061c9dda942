// The /v1 API as an HTTP handler over the engine:
//   POST   /v1/sandboxes        create (body: image | kernel + rootfs, run_id + name,
//                               memory_mib, vcpus, ttl_seconds)
//   GET    /v1/sandboxes        list (a remote caller sees its own)
//   GET    /v1/sandboxes/{id}   show
//   DELETE /v1/sandboxes/{id}   destroy (remote: X-Ephemera-Token, the client token)
//   GET    /v1/status           daemon status
//   GET    /v1/images           images (remote: names and digests only)
//   POST   /v1/images           import (local socket; body: name, kernel, rootfs, headroom_mib)
//   GET|DELETE /v1/images/{name}, POST /v1/images/prune   inspect, remove, prune (local socket)
//   POST   /v1/tokens, GET /v1/tokens, PATCH|DELETE /v1/tokens/{id}
//                               access tokens (local socket only)
// Errors are {"error": {"code", "message"}} with a matching HTTP status.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "api/access.h"
#include "api/http_server.h"
#include "engine/engine.h"

namespace ephemera {

// The listeners, as /v1/status shows them; set once they are bound (so an
// ephemeral port shows as the real one) while requests may already read.
class FrontDoors {
 public:
  void Set(nlohmann::json doors) {
    std::lock_guard lock(mutex_);
    doors_ = std::move(doors);
  }
  nlohmann::json Get() const {
    std::lock_guard lock(mutex_);
    return doors_;
  }

 private:
  mutable std::mutex mutex_;
  nlohmann::json doors_ = nlohmann::json::object();
};

struct ApiContext {
  Engine* engine = nullptr;
  std::string client_host;  // the host name clients use to reach forwarded ports
  std::string version;
  std::string accelerator;  // e.g. "tcg (KVM is the PVM flavour ...)"
  // Remote callers pass through this; requests from the local socket are
  // the administrator's and skip it.
  AccessControl* access = nullptr;
  const FrontDoors* front_doors = nullptr;
  // Who a non-root process on the local socket acts as (its uid from
  // SO_PEERCRED); throws kPermissionDenied for a uid that may not. None:
  // only root may use the local socket.
  std::function<Caller(std::uint32_t uid)> local_user;
};

// With a sink, POST /v1/images that accepts application/x-ndjson answers
// in lines as the import goes: {"progress": {reference, layer, layers,
// bytes, total, cached}} ..., then the answer (or {"error": ...}).
HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink = nullptr);

// Requests that may take seconds (create, destroy), for HttpServerOptions::is_slow.
bool IsSlowApiRequest(const HttpRequest& request);

}  // namespace ephemera

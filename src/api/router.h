// The /v1 API as an HTTP handler over the engine. Its routes are declared
// in one table (router.cc) and described in docs/openapi.yaml:
//   /v1/sandboxes[/{id}[/pause|/resume]]  create, list, show, change the
//       time to live, destroy, pause, resume (a remote caller sees its own;
//       changes need X-Ephemera-Token, the client token)
//   /v1/sandboxes/{id}/ports[/{port}]    forwarded guest ports: list,
//       expose, close
//   /v1/sandboxes/{id}/exec[/{exec}/stdin|resize|signal]  run a program
//       in the guest (NDJSON out), feed it, resize its terminal, signal it
//   /v1/sandboxes/{id}/files?path=       read (GET) or write (PUT) a file,
//       or a folder as tar
//   /v1/status                           daemon status
//   /v1/images[/{name}|/prune]           list (remote: names and digests);
//       import, inspect, remove, prune (local socket)
//   /v1/tokens[/{id}]                    access tokens (local socket only)
//   /v1/events?since=&follow=            the event log, then new events as
//       server-sent events (root on the local socket)
//   /v1/usage                            what each sandbox uses now
//   /metrics                             Prometheus metrics (root on the
//       local socket, or on metrics.listen)
// Errors are {"error": {"code", "message"}} with a matching HTTP status.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

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

// Long-lived streams a door allows at once (events.max_subscribers).
class StreamSlots {
 public:
  explicit StreamSlots(std::size_t max) : max_(max) {}
  bool TryTake() {
    std::lock_guard lock(mutex_);
    if (taken_ >= max_) return false;
    ++taken_;
    return true;
  }
  void Give() {
    std::lock_guard lock(mutex_);
    --taken_;
  }
  std::size_t max() const { return max_; }

 private:
  std::mutex mutex_;
  const std::size_t max_;
  std::size_t taken_ = 0;
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
  // Open /v1/events streams; none: no limit.
  StreamSlots* event_streams = nullptr;
  // Requests by door, verb and status (ephemera_requests_total); the door
  // is "socket" for the local socket, `door` for TCP peers.
  CounterFamily* requests = nullptr;
  std::string door = "https";
};

// GET /metrics' answer: the registry rendered in the text format.
HttpResponse MetricsResponse(const MetricsRegistry& registry, unsigned http_version);

// The family ApiContext::requests counts in, registered in `registry`.
CounterFamily& RegisterRequestMetrics(MetricsRegistry& registry);

// With a sink, POST /v1/images that accepts application/x-ndjson answers
// in lines as the import goes: {"progress": {reference, layer, layers,
// bytes, total, cached}} ..., then the answer (or {"error": ...}).
HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink = nullptr);

// Requests that may take seconds (create, destroy), for HttpServerOptions::is_slow.
bool IsSlowApiRequest(const HttpRequest& request);

// Requests whose body the handler reads as it comes (a file's upload, a
// process's stdin), for HttpServerOptions::streams_body.
bool StreamsApiRequestBody(const HttpRequest& request);

// Every route the API serves: method ("GET") and path ("/v1/sandboxes/{id}").
struct ApiRouteInfo {
  std::string method;
  std::string path;
};
std::vector<ApiRouteInfo> ApiRoutes();

}  // namespace ephemera

// The /v1 API as an HTTP handler over the engine:
//   POST   /v1/sandboxes        create (body: image, memory_mib, vcpus, ttl_seconds)
//   GET    /v1/sandboxes        list
//   GET    /v1/sandboxes/{id}   show
//   DELETE /v1/sandboxes/{id}   destroy
//   GET    /v1/status           daemon status
// Errors are {"error": {"code", "message"}} with a matching HTTP status.
#pragma once

#include <string>

#include "api/http_server.h"
#include "engine/engine.h"

namespace ephemera {

struct ApiContext {
  Engine* engine = nullptr;
  std::string client_host;  // the host name clients use to reach forwarded ports
  std::string version;
  std::string accelerator;  // e.g. "tcg (KVM is the PVM flavour ...)"
  bool admin = true;        // the local socket: destroy needs no client token
};

HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request);

}  // namespace ephemera

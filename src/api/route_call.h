// What a route's handler gets, and the checks handlers share (router.cc).
// The routes themselves are declared in router.cc's table.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "api/router.h"

namespace ephemera::routes {

// One request on its way through a route: the route's {parameter}, if it
// has one, and who asks (none: root on the local socket).
struct Call {
  const ApiContext& c;
  const HttpRequest& request;
  const std::optional<Caller>& caller;
  HttpChunkSink* sink;
  std::string_view param;   // the path's first {parameter}
  std::string_view param2;  // its second
};

void LocalSocketOnly(const Call& call, std::string_view what);

// The sandbox as the caller may see it. Another owner's sandbox answers
// as an unknown one does (no existence oracle for remote callers).
Sandbox VisibleSandbox(const Call& call, const SandboxId& id);

// The sandbox the route names, and the client token a change to it acts
// with: a remote caller must hold the sandbox's token, a local user's own
// sandboxes and root need none.
std::optional<std::string> ActingToken(const Call& call, const SandboxId& id,
                                       std::string_view doing);

// Programs and files in the guest (guest_routes.cc).
HttpResponse RunExec(const Call& call);
HttpResponse WriteExecStdin(const Call& call);
HttpResponse ResizeExecTerminal(const Call& call);
HttpResponse SignalExec(const Call& call);
HttpResponse DownloadFile(const Call& call);
HttpResponse UploadFile(const Call& call);

// Metrics, events and usage (observe_routes.cc).
HttpResponse GetMetrics(const Call& call);
HttpResponse StreamEvents(const Call& call);
HttpResponse GetUsage(const Call& call);

}  // namespace ephemera::routes

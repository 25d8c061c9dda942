#include "api/router.h"

#include <spdlog/spdlog.h>

#include <array>

#include "api/route_call.h"
#include "api/wire.h"
#include "core/error.h"

namespace ephemera {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

HttpResponse Json(http::status status, const json& body) {
  return JsonResponse(static_cast<unsigned>(status), body);
}

json PoolsToJson(const std::vector<PoolStatus>& pools) {
  json list = json::array();
  for (const PoolStatus& p : pools) {
    list.push_back({{"image", p.spec.image},
                    {"memory_mib", p.spec.memory_mib},
                    {"vcpus", p.spec.vcpus},
                    {"size", p.spec.size},
                    {"ready", p.ready},
                    {"hits", p.hits},
                    {"misses", p.misses}});
  }
  return list;
}

json SnapshotsToJson(const std::vector<SnapshotStatus>& snapshots) {
  json list = json::array();
  for (const SnapshotStatus& s : snapshots) {
    list.push_back({{"image", s.image},
                    {"memory_mib", s.memory_mib},
                    {"vcpus", s.vcpus},
                    {"state", s.state},
                    {"restores", s.restores},
                    {"fallbacks", s.fallbacks}});
  }
  return list;
}

// The sandbox's client token, if the request carries one.
std::optional<std::string> ClientToken(const HttpRequest& request) {
  if (auto it = request.find("X-Ephemera-Token"); it != request.end()) {
    return std::string(it->value());
  }
  return std::nullopt;
}

bool Visible(const Sandbox& sandbox, const std::optional<Caller>& caller) {
  return !caller || sandbox.owner == caller->owner;
}

// An import's progress as NDJSON lines, at most every 200 ms per layer
// plus each layer's start and end, when the client asked for them.
class ImportProgressLines {
 public:
  explicit ImportProgressLines(HttpChunkSink* sink) : sink_(sink) {}
  void operator()(const oci::PullProgress& p) {
    if (!sink_ || gone_) return;
    const auto now = std::chrono::steady_clock::now();
    const bool edge = p.bytes == 0 || p.bytes == p.total || p.layer != last_layer_ ||
                      p.reference != last_reference_;
    if (!edge && now - last_sent_ < std::chrono::milliseconds(200)) return;
    last_sent_ = now;
    last_layer_ = p.layer;
    last_reference_ = p.reference;
    json line = {{"progress",
                  {{"reference", p.reference},
                   {"layer", p.layer},
                   {"layers", p.layers},
                   {"bytes", p.bytes},
                   {"total", p.total},
                   {"cached", p.cached}}}};
    gone_ = !sink_->Send(kNdjson, line.dump() + "\n");
  }
  static constexpr const char* kNdjson = "application/x-ndjson";

 private:
  HttpChunkSink* sink_;
  bool gone_ = false;
  std::chrono::steady_clock::time_point last_sent_{};
  std::size_t last_layer_ = ~std::size_t{0};
  std::string last_reference_;
};

bool WantsNdjson(const HttpRequest& request) {
  auto accept = request.find(http::field::accept);
  return accept != request.end() &&
         std::string_view(accept->value().data(), accept->value().size())
                 .find(ImportProgressLines::kNdjson) != std::string_view::npos;
}

}  // namespace

namespace routes {

void LocalSocketOnly(const Call& call, std::string_view what) {
  if (call.caller) Fail(ErrorCode::kPermissionDenied, "{} on the local socket", what);
}

// The sandbox as the caller may see it. Another owner's sandbox answers
// as an unknown one does (no existence oracle for remote callers).
Sandbox VisibleSandbox(const Call& call, const SandboxId& id) {
  auto sandbox = call.c.engine->Get(id);
  if (!sandbox || !Visible(*sandbox, call.caller)) {
    Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  }
  return *sandbox;
}

// The sandbox the route names, and the client token a change to it acts
// with. Another owner's sandbox answers as an unknown one does (no
// existence oracle for remote callers); a remote caller must hold the
// sandbox's token, a local user's own sandboxes and root need none.
std::optional<std::string> ActingToken(const Call& call, const SandboxId& id,
                                       std::string_view doing) {
  std::optional<std::string> token = ClientToken(call.request);
  if (!call.caller) return token;
  VisibleSandbox(call, id);
  if (!call.caller->local_user && !token) {
    Fail(ErrorCode::kPermissionDenied, "{} needs the sandbox's client token", doing);
  }
  return token;
}

}  // namespace routes

namespace {

using routes::ActingToken;
using routes::Call;
using routes::LocalSocketOnly;
using routes::VisibleSandbox;

HttpResponse GetStatus(const Call& call) {
  EngineStatus s = call.c.engine->Status();
  return Json(http::status::ok,
              {{"version", call.c.version},
               {"sandboxes", s.sandboxes},
               {"max_sandboxes", s.max_sandboxes},
               {"available", s.max_sandboxes - std::min(s.max_sandboxes, s.sandboxes)},
               {"uptime_seconds", s.uptime_seconds},
               {"accelerator", call.c.accelerator},
               {"drivers", s.drivers},
               {"pools", PoolsToJson(s.pools)},
               {"snapshots", SnapshotsToJson(s.snapshots)},
               {"front_doors", call.c.front_doors ? call.c.front_doors->Get() : json::object()}});
}

HttpResponse ListImages(const Call& call) {
  json images = json::array();
  for (const auto& entry : call.c.engine->Images()) {
    json j = ImageEntryToJson(entry);
    // Remote callers learn which images exist, not the host's paths or errors.
    if (call.caller) {
      j.erase("iso_path");
      if (j.contains("error")) j["error"] = "not usable";
    }
    images.push_back(std::move(j));
  }
  return Json(http::status::ok, {{"images", images}});
}

HttpResponse ImportImage(const Call& call) {
  // Imports read the host's files.
  LocalSocketOnly(call, "images are imported");
  ImageImport import = ParseImageImport(call.request.body());
  // Asked for, progress goes out as NDJSON lines, the answer last.
  ImportProgressLines progress(WantsNdjson(call.request) ? call.sink : nullptr);
  oci::ImportResult r = call.c.engine->ImportImage(import, std::ref(progress));
  return Json(http::status::created,
              {{"name", import.name},
               {"dir", r.dir.string()},
               {"kernel_digest", r.kernel_digest ? r.kernel_digest->str() : ""},
               {"rootfs_digest", r.rootfs_digest.str()},
               {"rootfs_bytes", r.rootfs.image_bytes},
               {"cached", r.cached}});
}

HttpResponse PruneImages(const Call& call) {
  LocalSocketOnly(call, "images are managed");
  return Json(http::status::ok, {{"removed", call.c.engine->PruneImages()}});
}

HttpResponse InspectImage(const Call& call) {
  LocalSocketOnly(call, "images are managed");
  return Json(http::status::ok,
              ImageDetailsToJson(call.c.engine->InspectImage(std::string(call.param))));
}

HttpResponse RemoveImage(const Call& call) {
  LocalSocketOnly(call, "images are managed");
  call.c.engine->RemoveImage(std::string(call.param));
  return Json(http::status::ok, {{"name", std::string(call.param)}, {"deleted", true}});
}

HttpResponse AddToken(const Call& call) {
  LocalSocketOnly(call, "access tokens are managed");
  IssuedAccessToken issued =
      call.c.engine->AddAccessToken(ParseNewAccessToken(call.request.body()));
  json body = AccessTokenToJson(issued.record);
  body["token"] = issued.secret;
  return Json(http::status::created, body);
}

HttpResponse ListTokens(const Call& call) {
  LocalSocketOnly(call, "access tokens are managed");
  json list = json::array();
  for (const auto& t : call.c.engine->ListAccessTokens()) list.push_back(AccessTokenToJson(t));
  return Json(http::status::ok, {{"tokens", list}});
}

HttpResponse EnableToken(const Call& call) {
  LocalSocketOnly(call, "access tokens are managed");
  const bool enabled = ParseTokenEnabled(call.request.body());
  return Json(http::status::ok, AccessTokenToJson(call.c.engine->SetAccessTokenEnabled(
                                    std::string(call.param), enabled)));
}

HttpResponse DeleteToken(const Call& call) {
  LocalSocketOnly(call, "access tokens are managed");
  call.c.engine->DeleteAccessToken(std::string(call.param));
  return Json(http::status::ok, {{"id", std::string(call.param)}, {"deleted", true}});
}

HttpResponse CreateSandbox(const Call& call) {
  CreateRequest create = ParseCreateRequest(call.request.body());
  if (call.caller) {
    create.owner = call.caller->owner;
    create.owner_limit = call.caller->owner_limit;
    create.owner_memory_mib = call.caller->owner_memory_mib;
  }
  CreateResult result = call.c.engine->Create(create);
  HttpResponse response =
      Json(http::status::created, CreateResultToJson(result, call.c.client_host));
  response.set(http::field::location, "/v1/sandboxes/" + result.sandbox.id.str());
  return response;
}

HttpResponse ListSandboxes(const Call& call) {
  json list = json::array();
  for (const auto& s : call.c.engine->List()) {
    if (Visible(s, call.caller)) list.push_back(SandboxToJson(s, call.c.client_host));
  }
  return Json(http::status::ok, {{"sandboxes", list}});
}

HttpResponse ShowSandbox(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  return Json(http::status::ok, SandboxToJson(VisibleSandbox(call, id), call.c.client_host));
}

HttpResponse DestroySandbox(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  std::optional<std::string> token = ActingToken(call, id, "destroying");
  call.c.engine->Destroy(id, token);
  return Json(http::status::ok, {{"id", id.str()}, {"state", "destroyed"}});
}

HttpResponse ChangeLifetime(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  std::optional<std::int64_t> ttl = ParseLifetimeChange(call.request.body());
  std::optional<std::string> token = ActingToken(call, id, "changing its time to live");
  Sandbox changed = call.c.engine->SetTimeToLive(id, ttl, token);
  // As GET shows it (whether its VM runs, asked of the driver now).
  auto shown = call.c.engine->Get(id);
  return Json(http::status::ok, SandboxToJson(shown ? *shown : changed, call.c.client_host));
}

json PortToJson(const ExposedPort& port, const std::string& host) {
  return {{"guest_port", port.guest_port}, {"host_port", port.host_port}, {"host", host}};
}

HttpResponse ListPorts(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  VisibleSandbox(call, id);
  json ports = json::array();
  for (const ExposedPort& p : call.c.engine->ExposedPorts(id, std::nullopt)) {
    ports.push_back(PortToJson(p, call.c.client_host));
  }
  return Json(http::status::ok, {{"ports", ports}});
}

HttpResponse ExposePort(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  const std::uint16_t guest_port = ParsePortExposure(call.request.body());
  std::optional<std::string> token = ActingToken(call, id, "exposing a port");
  ExposedPort port = call.c.engine->ExposePort(id, guest_port, token);
  HttpResponse response = Json(http::status::created, PortToJson(port, call.c.client_host));
  response.set(http::field::location,
               fmt::format("/v1/sandboxes/{}/ports/{}", id.str(), port.guest_port));
  return response;
}

HttpResponse UnexposePort(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  const std::uint16_t guest_port = ParsePortNumber(call.param2);
  std::optional<std::string> token = ActingToken(call, id, "closing a port");
  call.c.engine->UnexposePort(id, guest_port, token);
  return Json(http::status::ok, {{"guest_port", guest_port}, {"exposed", false}});
}

HttpResponse PauseSandbox(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  std::optional<std::string> token = ActingToken(call, id, "pausing");
  return Json(http::status::ok, SandboxToJson(call.c.engine->Pause(id, token), call.c.client_host));
}

HttpResponse ResumeSandbox(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  std::optional<std::string> token = ActingToken(call, id, "resuming");
  return Json(http::status::ok,
              SandboxToJson(call.c.engine->Resume(id, token), call.c.client_host));
}

struct Route {
  http::verb method;
  std::string_view path;  // segments; "{name}" takes one non-empty segment
  bool slow;              // may take seconds: HttpServerOptions::is_slow
  HttpResponse (*handler)(const Call&);
  bool streams_body = false;  // reads its body as it comes: HttpServerOptions::streams_body
};

// Every route of /v1, the only place one is declared (docs/openapi.yaml
// describes the same; a test holds them together). Where two paths match,
// the first with the request's method wins: literal segments go first.
constexpr Route kRoutes[] = {
    {http::verb::get, "/v1/status", false, GetStatus},
    {http::verb::get, "/metrics", false, routes::GetMetrics},
    // Followers stay as long as they like: on a slow worker each.
    {http::verb::get, "/v1/events", true, routes::StreamEvents},
    {http::verb::get, "/v1/usage", false, routes::GetUsage},
    {http::verb::get, "/v1/images", false, ListImages},
    {http::verb::post, "/v1/images", true, ImportImage},
    {http::verb::post, "/v1/images/prune", false, PruneImages},
    {http::verb::get, "/v1/images/{name}", false, InspectImage},
    {http::verb::delete_, "/v1/images/{name}", false, RemoveImage},
    {http::verb::get, "/v1/tokens", false, ListTokens},
    {http::verb::post, "/v1/tokens", false, AddToken},
    {http::verb::patch, "/v1/tokens/{id}", false, EnableToken},
    {http::verb::delete_, "/v1/tokens/{id}", false, DeleteToken},
    {http::verb::get, "/v1/sandboxes", false, ListSandboxes},
    {http::verb::post, "/v1/sandboxes", true, CreateSandbox},
    {http::verb::get, "/v1/sandboxes/{id}", false, ShowSandbox},
    {http::verb::patch, "/v1/sandboxes/{id}", false, ChangeLifetime},
    {http::verb::delete_, "/v1/sandboxes/{id}", true, DestroySandbox},
    {http::verb::post, "/v1/sandboxes/{id}/pause", true, PauseSandbox},
    {http::verb::post, "/v1/sandboxes/{id}/resume", true, ResumeSandbox},
    {http::verb::get, "/v1/sandboxes/{id}/ports", false, ListPorts},
    // The network's lock may wait for a create's or destroy's subprocesses.
    {http::verb::post, "/v1/sandboxes/{id}/ports", true, ExposePort},
    {http::verb::delete_, "/v1/sandboxes/{id}/ports/{port}", true, UnexposePort},
    // Programs and files in the guest: they run as long as they run.
    {http::verb::post, "/v1/sandboxes/{id}/exec", true, routes::RunExec},
    {http::verb::post, "/v1/sandboxes/{id}/exec/{exec}/stdin", true, routes::WriteExecStdin, true},
    {http::verb::post, "/v1/sandboxes/{id}/exec/{exec}/resize", true, routes::ResizeExecTerminal},
    {http::verb::post, "/v1/sandboxes/{id}/exec/{exec}/signal", true, routes::SignalExec},
    {http::verb::get, "/v1/sandboxes/{id}/files", true, routes::DownloadFile},
    {http::verb::put, "/v1/sandboxes/{id}/files", true, routes::UploadFile, true},
};

// What a path's "{...}" segments took, in order.
using PathParams = std::array<std::string_view, 2>;

// Whether `path` fits `pattern`; `params` gets what its "{...}" segments took.
bool PathMatches(std::string_view pattern, std::string_view path, PathParams& params) {
  std::size_t taken = 0;
  while (!pattern.empty() || !path.empty()) {
    if (pattern.empty() || path.empty() || pattern[0] != '/' || path[0] != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    const std::string_view want = pattern.substr(0, pattern.find('/'));
    const std::string_view got = path.substr(0, path.find('/'));
    if (want.starts_with('{')) {
      if (got.empty() || taken == params.size()) return false;
      params[taken++] = got;
    } else if (want != got) {
      return false;
    }
    pattern.remove_prefix(want.size());
    path.remove_prefix(got.size());
  }
  return true;
}

std::string_view PathOf(const HttpRequest& request) {
  std::string_view target(request.target().data(), request.target().size());
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  return target;
}

// The route for the request, with its parameter; kNotFound for a path no
// route has, kInvalidArgument for a method its path does not take.
const Route& FindRoute(const HttpRequest& request, PathParams& params) {
  const std::string_view path = PathOf(request);
  bool path_known = false;
  for (const Route& route : kRoutes) {
    PathParams taken;
    if (!PathMatches(route.path, path, taken)) continue;
    path_known = true;
    if (route.method == request.method()) {
      params = taken;
      return route;
    }
  }
  if (path_known)
    Fail(ErrorCode::kInvalidArgument, "method not allowed on {}", path.substr(0, 100));
  Fail(ErrorCode::kNotFound, "no such endpoint: {}", std::string(path).substr(0, 100));
}

HttpResponse Dispatch(const ApiContext& c, const HttpRequest& request, const Peer& peer,
                      HttpChunkSink* sink, std::string& verb) {
  std::optional<Caller> caller;
  if (!peer.local) {
    if (!c.access) Fail(ErrorCode::kInternal, "a remote front door without access control");
    caller = c.access->Admit(peer, BearerToken(request));
  } else if (peer.uid != 0) {
    if (!c.local_user) {
      Fail(ErrorCode::kPermissionDenied, "only root may use this socket (you are uid {})",
           peer.uid);
    }
    caller = c.local_user(peer.uid);
  }
  PathParams params;
  const Route& route = FindRoute(request, params);
  verb = fmt::format("{} {}", std::string(http::to_string(route.method)), route.path);
  return route.handler(Call{c, request, caller, sink, params[0], params[1]});
}

}  // namespace

std::vector<ApiRouteInfo> ApiRoutes() {
  std::vector<ApiRouteInfo> routes;
  for (const Route& route : kRoutes) {
    routes.push_back({std::string(http::to_string(route.method)), std::string(route.path)});
  }
  return routes;
}

bool StreamsApiRequestBody(const HttpRequest& request) {
  for (const Route& route : kRoutes) {
    PathParams params;
    if (route.method == request.method() && PathMatches(route.path, PathOf(request), params)) {
      return route.streams_body;
    }
  }
  return false;
}

bool IsSlowApiRequest(const HttpRequest& request) {
  for (const Route& route : kRoutes) {
    PathParams params;
    if (route.method == request.method() && PathMatches(route.path, PathOf(request), params)) {
      return route.slow;
    }
  }
  return false;
}

namespace {
HttpResponse AnswerApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink, std::string& verb);
}  // namespace

CounterFamily& RegisterRequestMetrics(MetricsRegistry& registry) {
  return registry.Counter("ephemera_requests_total",
                          "Front-door requests by door, verb (an API route, or an Anweddol "
                          "verb) and status.",
                          {"door", "verb", "status"});
}

HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink) {
  // Routes nobody has are counted together: their paths are the caller's.
  std::string verb = "other";
  HttpResponse response = AnswerApiRequest(context, request, peer, sink, verb);
  if (context.requests) {
    context.requests->Add({peer.local ? std::string("socket") : context.door, verb,
                           std::to_string(response.result_int())});
  }
  return response;
}

namespace {

HttpResponse AnswerApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink, std::string& verb) {
  try {
    return Dispatch(context, request, peer, sink, verb);
  } catch (const RateLimitedError& e) {
    HttpResponse response = Json(http::status::too_many_requests, ErrorToJson(e));
    response.set(http::field::retry_after, std::to_string(e.retry_after().count()));
    return response;
  } catch (const Error& e) {
    const bool internal = RevealsInternals(e.code());
    // Only root (on the local socket) reads the host's internals.
    const bool admin = peer.local && peer.uid == 0;
    if (e.code() == ErrorCode::kInternal || (internal && !admin)) {
      spdlog::error("api: {} {} from {}: {}", std::string(request.method_string()),
                    std::string(request.target()).substr(0, 100), peer.ToString(), e.what());
    }
    // Remote callers get what went wrong, not the host's paths, programs'
    // stderr or guest output; the log has the details.
    HttpResponse response = Json(static_cast<http::status>(HttpStatusFor(e.code())),
                                 ErrorToJson(internal && !admin ? ForRemoteCaller(e) : e));
    if (e.code() == ErrorCode::kUnauthenticated) {
      response.set(http::field::www_authenticate, "Bearer");
    }
    return response;
  } catch (const std::exception& e) {
    spdlog::error("api: {} {} from {}: {}", std::string(request.method_string()),
                  std::string(request.target()).substr(0, 100), peer.ToString(), e.what());
    return Json(http::status::internal_server_error,
                ErrorToJson(peer.local && peer.uid == 0
                                ? Error(ErrorCode::kInternal, e.what())
                                : ForRemoteCaller(Error(ErrorCode::kInternal, ""))));
  }
}

}  // namespace

}  // namespace ephemera

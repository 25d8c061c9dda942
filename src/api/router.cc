#include "api/router.h"

#include <spdlog/spdlog.h>

#include "api/wire.h"
#include "core/error.h"

namespace ephemera {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

HttpResponse Json(http::status status, const json& body) {
  return JsonResponse(static_cast<unsigned>(status), body);
}

constexpr std::string_view kSandboxes = "/v1/sandboxes";
constexpr std::string_view kTokens = "/v1/tokens";

// "/v1/sandboxes/ID" -> "ID" for prefix "/v1/sandboxes"; empty otherwise.
std::string_view Child(std::string_view target, std::string_view collection) {
  if (target.size() <= collection.size() + 1 || target.substr(0, collection.size()) != collection ||
      target[collection.size()] != '/') {
    return {};
  }
  return target.substr(collection.size() + 1);
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

[[noreturn]] void MethodNotAllowed(std::string_view target) {
  Fail(ErrorCode::kInvalidArgument, "method not allowed on {}", target);
}

bool Visible(const Sandbox& sandbox, const std::optional<Caller>& caller) {
  return !caller || sandbox.owner == caller->owner;
}

// The client token a change to sandbox `id` acts with. Another owner's
// sandbox answers as an unknown one does (no existence oracle for remote
// callers); a remote caller must hold the sandbox's token, a local user's
// own sandboxes and root need none.
std::optional<std::string> ActingToken(const ApiContext& c, const HttpRequest& request,
                                       const std::optional<Caller>& caller, const SandboxId& id,
                                       std::string_view doing) {
  std::optional<std::string> token = ClientToken(request);
  if (!caller) return token;
  auto sandbox = c.engine->Get(id);
  if (!sandbox || !Visible(*sandbox, caller)) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (!caller->local_user && !token) {
    Fail(ErrorCode::kPermissionDenied, "{} needs the sandbox's client token", doing);
  }
  return token;
}

HttpResponse Tokens(const ApiContext& c, const HttpRequest& request, std::string_view target,
                    const std::optional<Caller>& caller) {
  if (caller) Fail(ErrorCode::kPermissionDenied, "access tokens are managed on the local socket");
  const auto method = request.method();
  if (target == kTokens) {
    if (method == http::verb::post) {
      IssuedAccessToken issued = c.engine->AddAccessToken(ParseNewAccessToken(request.body()));
      json body = AccessTokenToJson(issued.record);
      body["token"] = issued.secret;
      return Json(http::status::created, body);
    }
    if (method == http::verb::get) {
      json list = json::array();
      for (const auto& t : c.engine->ListAccessTokens()) list.push_back(AccessTokenToJson(t));
      return Json(http::status::ok, {{"tokens", list}});
    }
    MethodNotAllowed(target);
  }
  const std::string id(Child(target, kTokens));
  if (method == http::verb::patch) {
    return Json(http::status::ok, AccessTokenToJson(c.engine->SetAccessTokenEnabled(
                                      id, ParseTokenEnabled(request.body()))));
  }
  if (method == http::verb::delete_) {
    c.engine->DeleteAccessToken(id);
    return Json(http::status::ok, {{"id", id}, {"deleted", true}});
  }
  MethodNotAllowed(target);
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

HttpResponse Route(const ApiContext& c, const HttpRequest& request, const Peer& peer,
                   HttpChunkSink* sink) {
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
  const std::string target_text(request.target());
  std::string_view target = target_text;
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  const auto method = request.method();

  if (target == "/v1/status") {
    if (method != http::verb::get) MethodNotAllowed(target);
    EngineStatus s = c.engine->Status();
    return Json(http::status::ok,
                {{"version", c.version},
                 {"sandboxes", s.sandboxes},
                 {"max_sandboxes", s.max_sandboxes},
                 {"available", s.max_sandboxes - std::min(s.max_sandboxes, s.sandboxes)},
                 {"uptime_seconds", s.uptime_seconds},
                 {"accelerator", c.accelerator},
                 {"drivers", s.drivers},
                 {"pools", PoolsToJson(s.pools)},
                 {"snapshots", SnapshotsToJson(s.snapshots)},
                 {"front_doors", c.front_doors ? c.front_doors->Get() : json::object()}});
  }
  if (target == "/v1/images" && method == http::verb::post) {
    // Imports read the host's files: the local socket only.
    if (caller) Fail(ErrorCode::kPermissionDenied, "images are imported on the local socket");
    ImageImport import = ParseImageImport(request.body());
    // Asked for, progress goes out as NDJSON lines, the answer last.
    ImportProgressLines progress(WantsNdjson(request) ? sink : nullptr);
    oci::ImportResult r = c.engine->ImportImage(import, std::ref(progress));
    return Json(http::status::created,
                {{"name", import.name},
                 {"dir", r.dir.string()},
                 {"kernel_digest", r.kernel_digest ? r.kernel_digest->str() : ""},
                 {"rootfs_digest", r.rootfs_digest.str()},
                 {"rootfs_bytes", r.rootfs.image_bytes},
                 {"cached", r.cached}});
  }
  if (std::string_view name = Child(target, "/v1/images"); !name.empty()) {
    if (caller) Fail(ErrorCode::kPermissionDenied, "images are managed on the local socket");
    if (name == "prune" && method == http::verb::post) {
      return Json(http::status::ok, {{"removed", c.engine->PruneImages()}});
    }
    if (method == http::verb::get) {
      return Json(http::status::ok, ImageDetailsToJson(c.engine->InspectImage(std::string(name))));
    }
    if (method != http::verb::delete_) MethodNotAllowed(target);
    c.engine->RemoveImage(std::string(name));
    return Json(http::status::ok, {{"name", std::string(name)}, {"deleted", true}});
  }
  if (target == "/v1/images") {
    if (method != http::verb::get) MethodNotAllowed(target);
    json images = json::array();
    for (const auto& entry : c.engine->Images()) {
      json j = ImageEntryToJson(entry);
      // Remote callers learn which images exist, not the host's paths or errors.
      if (caller) {
        j.erase("iso_path");
        if (j.contains("error")) j["error"] = "not usable";
      }
      images.push_back(std::move(j));
    }
    return Json(http::status::ok, {{"images", images}});
  }
  if (target == kTokens || !Child(target, kTokens).empty()) {
    return Tokens(c, request, target, caller);
  }
  if (target == kSandboxes) {
    if (method == http::verb::post) {
      CreateRequest create = ParseCreateRequest(request.body());
      if (caller) {
        create.owner = caller->owner;
        create.owner_limit = caller->owner_limit;
        create.owner_memory_mib = caller->owner_memory_mib;
      }
      CreateResult result = c.engine->Create(create);
      return Json(http::status::created, CreateResultToJson(result, c.client_host));
    }
    if (method == http::verb::get) {
      json list = json::array();
      for (const auto& s : c.engine->List()) {
        if (Visible(s, caller)) list.push_back(SandboxToJson(s, c.client_host));
      }
      return Json(http::status::ok, {{"sandboxes", list}});
    }
    MethodNotAllowed(target);
  }
  if (std::string_view child = Child(target, kSandboxes); !child.empty()) {
    // /v1/sandboxes/{id}/pause and /resume
    std::string_view action;
    if (auto slash = child.find('/'); slash != std::string_view::npos) {
      action = child.substr(slash + 1);
      child = child.substr(0, slash);
    }
    SandboxId id = SandboxId::Parse(child);
    if (!action.empty()) {
      if (action != "pause" && action != "resume") {
        Fail(ErrorCode::kNotFound, "no such endpoint: {}", std::string(target).substr(0, 100));
      }
      if (method != http::verb::post) MethodNotAllowed(target);
      std::optional<std::string> token =
          ActingToken(c, request, caller, id, action == "pause" ? "pausing" : "resuming");
      Sandbox moved = action == "pause" ? c.engine->Pause(id, token) : c.engine->Resume(id, token);
      return Json(http::status::ok, SandboxToJson(moved, c.client_host));
    }
    if (method == http::verb::get) {
      auto sandbox = c.engine->Get(id);
      if (!sandbox || !Visible(*sandbox, caller))
        Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
      return Json(http::status::ok, SandboxToJson(*sandbox, c.client_host));
    }
    if (method == http::verb::delete_) {
      std::optional<std::string> token = ActingToken(c, request, caller, id, "destroying");
      c.engine->Destroy(id, token);
      return Json(http::status::ok, {{"id", id.str()}, {"state", "destroyed"}});
    }
    if (method == http::verb::patch) {
      std::optional<std::int64_t> ttl = ParseLifetimeChange(request.body());
      std::optional<std::string> token =
          ActingToken(c, request, caller, id, "changing its time to live");
      Sandbox changed = c.engine->SetTimeToLive(id, ttl, token);
      return Json(http::status::ok, SandboxToJson(changed, c.client_host));
    }
    MethodNotAllowed(target);
  }
  Fail(ErrorCode::kNotFound, "no such endpoint: {}", std::string(target).substr(0, 100));
}

}  // namespace

bool IsSlowApiRequest(const HttpRequest& request) {
  std::string_view target(request.target().data(), request.target().size());
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  if (request.method() == http::verb::post) {
    return target == kSandboxes || target == "/v1/images" ||
           (!Child(target, kSandboxes).empty() &&
            (target.ends_with("/pause") || target.ends_with("/resume")));
  }
  if (request.method() == http::verb::delete_) return !Child(target, kSandboxes).empty();
  return false;
}

HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request,
                              const Peer& peer, HttpChunkSink* sink) {
  try {
    return Route(context, request, peer, sink);
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

}  // namespace ephemera

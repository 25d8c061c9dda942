#include "api/anweddol_verbs.h"

#include <spdlog/spdlog.h>

#include <cctype>

#include "api/wire.h"
#include "core/sandbox_id.h"

namespace ephemera {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxVerbLength = 32;

bool IsClientToken(const std::string& token) {
  return token.size() == Engine::kTokenLength &&
         token.find_first_not_of(
             "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-") ==
             std::string::npos;
}

std::optional<std::string> OptionalString(const json& parameters, const char* key) {
  auto it = parameters.find(key);
  if (it == parameters.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) Fail(ErrorCode::kInvalidArgument, "'{}' must be a string", key);
  return it->get<std::string>();
}

json Create(const AnweddolContext& c, const Caller& caller) {
  CreateRequest request;
  request.kind = c.kind;
  request.owner = caller.owner;
  request.owner_limit = caller.owner_limit;
  CreateResult r = c.engine->Create(request);
  return AnweddolResponse(true, kAnweddolOk,
                          {{"container_uuid", r.sandbox.id.str()},
                           {"client_token", r.token},
                           {"container_iso_sha256", r.sandbox.image_sha256},
                           {"container_username", r.sandbox.username},
                           {"container_password", r.password},
                           {"container_listen_port", r.sandbox.host_port}});
}

struct ContainerCredentials {
  SandboxId id;
  std::string token;
};

ContainerCredentials ParseContainerCredentials(const std::optional<std::string>& uuid,
                                               const std::optional<std::string>& token) {
  if (!uuid || !token) {
    Fail(ErrorCode::kInvalidArgument, "'container_uuid' and 'client_token' are required");
  }
  if (!SandboxId::IsValid(*uuid)) {
    Fail(ErrorCode::kInvalidArgument, "'container_uuid' is not a lowercase UUID4");
  }
  if (!IsClientToken(*token)) {
    Fail(ErrorCode::kInvalidArgument, "'client_token' is not {} characters of [0-9a-zA-Z_-]",
         Engine::kTokenLength);
  }
  return {SandboxId::Parse(*uuid), *token};
}

// One answer for an unknown sandbox and a wrong token: neither reveals
// which sandboxes exist.
template <typename F>
auto AsAnweddolAuthFailure(F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound || e.code() == ErrorCode::kPermissionDenied) {
      Fail(ErrorCode::kUnauthenticated, "invalid container credentials");
    }
    throw;
  }
}

json Destroy(const AnweddolContext& c, const json& parameters) {
  ContainerCredentials credentials = ParseContainerCredentials(
      OptionalString(parameters, "container_uuid"), OptionalString(parameters, "client_token"));
  AsAnweddolAuthFailure([&] { c.engine->Destroy(credentials.id, credentials.token); });
  return AnweddolResponse(true, kAnweddolOk);
}

// STAT answers for the server; given a container's uuid and client token
// as well, it adds what Anweddol's container object holds for that one.
json Stat(const AnweddolContext& c, const json& parameters) {
  EngineStatus s = c.engine->Status();
  json data = {{"version", c.version},
               {"uptime", s.uptime_seconds},
               {"available", s.max_sandboxes - std::min(s.max_sandboxes, s.sandboxes)}};
  auto uuid = OptionalString(parameters, "container_uuid");
  auto token = OptionalString(parameters, "client_token");
  if (uuid || token) {
    ContainerCredentials credentials = ParseContainerCredentials(uuid, token);
    Sandbox sandbox = AsAnweddolAuthFailure(
        [&] { return c.engine->GetWithToken(credentials.id, credentials.token); });
    data["container"] = {{"container_uuid", sandbox.id.str()},
                         {"driver", sandbox.driver},
                         {"mac", sandbox.mac},
                         {"network", sandbox.network},
                         {"running", sandbox.running.value_or(false)},
                         {"container_iso_path", sandbox.iso_path},
                         {"container_iso_sha256", sandbox.image_sha256},
                         {"container_listen_port", sandbox.host_port},
                         {"state", std::string(StateName(sandbox.state))}};
  }
  return AnweddolResponse(true, kAnweddolOk, data);
}

json ResponseFor(const Error& raw) {
  // These doors are remote: internals stay in the log.
  const Error e = RevealsInternals(raw.code()) ? ForRemoteCaller(raw) : raw;
  switch (e.code()) {
    case ErrorCode::kInvalidArgument:
      return AnweddolResponse(false, kAnweddolBadRequest, json::object(), e.what());
    case ErrorCode::kUnauthenticated:
      return AnweddolResponse(false, kAnweddolBadAuth, json::object(), e.what());
    case ErrorCode::kPermissionDenied:
    case ErrorCode::kNotFound:
      return AnweddolResponse(false, kAnweddolRefused, json::object(), e.what());
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kUnavailable:
    case ErrorCode::kTimeout:
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kNoSpace:
      return AnweddolResponse(false, kAnweddolUnavailable, json::object(), e.what());
    case ErrorCode::kInternal:
      break;
  }
  return AnweddolResponse(false, kAnweddolInternal);
}

struct Outcome {
  json response;
  std::optional<std::chrono::seconds> retry_after;
};

Outcome Dispatch(const AnweddolContext& c, std::string_view verb, const json& parameters,
                 const Peer& peer);

// The verb as a metric's label: one of Anweddol's, or "other" (the rest
// are the caller's text).
std::string KnownVerb(std::string_view verb) {
  for (std::string_view known : {"CREATE", "DESTROY", "STAT"}) {
    if (verb == known) return std::string(known);
  }
  return "other";
}

// An answer's message as a label: "ok", "bad_request", "refused"...
std::string OutcomeLabel(const json& response) {
  std::string message = response.value("message", std::string());
  message = message.substr(0, message.find(" ("));
  for (std::string_view m : {kAnweddolOk, kAnweddolBadAuth, kAnweddolBadRequest, kAnweddolRefused,
                             kAnweddolUnavailable, kAnweddolInternal}) {
    if (message == m) {
      std::string label;
      for (char ch : m) {
        if (ch == ' ') {
          label += '_';
        } else {
          label += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        }
      }
      return label;
    }
  }
  return "other";
}

}  // namespace

json AnweddolResponse(bool success, std::string_view message, const json& data,
                      std::string_view reason) {
  std::string text(message);
  if (!reason.empty()) text += " (" + std::string(reason.substr(0, 200)) + ")";
  return {{"success", success}, {"message", text}, {"data", data}};
}

json HandleAnweddolVerb(const AnweddolContext& c, std::string_view verb, const json& parameters,
                        const Peer& peer) {
  json response = Dispatch(c, verb, parameters, peer).response;
  if (c.requests) c.requests->Add({c.door, KnownVerb(verb), OutcomeLabel(response)});
  return response;
}

namespace {

Outcome Dispatch(const AnweddolContext& c, std::string_view verb, const json& parameters,
                 const Peer& peer) {
  try {
    if (!parameters.is_object())
      Fail(ErrorCode::kInvalidArgument, "'parameters' must be an object");
    std::optional<std::string> access_token = OptionalString(parameters, "access_token");
    if (c.access->requires_tokens() && !access_token) {
      Fail(ErrorCode::kInvalidArgument, "Access token is required");
    }
    Caller caller = c.access->Admit(peer, access_token);
    if (verb == "CREATE") return {Create(c, caller), {}};
    if (verb == "DESTROY") return {Destroy(c, parameters), {}};
    if (verb == "STAT") return {Stat(c, parameters), {}};
    Fail(ErrorCode::kInvalidArgument, "unknown verb '{}'", verb.substr(0, kMaxVerbLength));
  } catch (const RateLimitedError& e) {
    return {AnweddolResponse(false, kAnweddolRefused, json::object(), e.what()), e.retry_after()};
  } catch (const Error& e) {
    if (RevealsInternals(e.code())) {
      spdlog::error("anweddol: {} from {}: {}", verb.substr(0, kMaxVerbLength), peer.ToString(),
                    e.what());
    }
    return {ResponseFor(e), {}};
  } catch (const std::exception& e) {
    spdlog::error("anweddol: {} from {}: {}", verb.substr(0, kMaxVerbLength), peer.ToString(),
                  e.what());
    return {AnweddolResponse(false, kAnweddolInternal), {}};
  }
}

}  // namespace

AnweddolRequest ParseAnweddolRequest(std::string_view body) {
  json request = ParseJsonObject(body);
  auto verb = request.find("verb");
  if (verb == request.end() || !verb->is_string() || verb->get<std::string>().empty() ||
      verb->get<std::string>().size() > kMaxVerbLength) {
    Fail(ErrorCode::kInvalidArgument, "'verb' must be a non-empty upper-case string");
  }
  AnweddolRequest parsed;
  parsed.verb = verb->get<std::string>();
  for (char ch : parsed.verb) {
    if (!(ch >= 'A' && ch <= 'Z') && ch != '_') {
      Fail(ErrorCode::kInvalidArgument, "'verb' must be upper-case letters");
    }
  }
  if (auto parameters = request.find("parameters"); parameters != request.end()) {
    if (!parameters->is_object()) {
      Fail(ErrorCode::kInvalidArgument, "'parameters' must be an object");
    }
    parsed.parameters = std::move(*parameters);
  }
  return parsed;
}

json HandleAnweddolRequest(const AnweddolContext& c, std::string_view body, const Peer& peer) {
  AnweddolRequest request;
  try {
    request = ParseAnweddolRequest(body);
  } catch (const Error& e) {
    return AnweddolResponse(false, kAnweddolBadRequest, json::object(), e.what());
  }
  return HandleAnweddolVerb(c, request.verb, request.parameters, peer);
}

bool IsSlowAnweddolWebRequest(const HttpRequest& request) {
  std::string target(request.target().substr(0, 128));
  if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
  for (char& ch : target) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return target == "/create" || target == "/destroy";
}

HttpResponse HandleAnweddolWebRequest(const AnweddolContext& c, const HttpRequest& request,
                                      const Peer& peer) {
  Outcome answer;
  std::string target(request.target().substr(0, 128));
  if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
  const bool one_segment =
      target.size() > 1 && target[0] == '/' && target.find('/', 1) == std::string::npos;
  if (!one_segment || target.size() - 1 > kMaxVerbLength) {
    answer.response = AnweddolResponse(false, kAnweddolBadRequest, json::object(), "unknown path");
  } else if (request.method() != http::verb::get && request.method() != http::verb::post) {
    answer.response =
        AnweddolResponse(false, kAnweddolBadRequest, json::object(), "use GET or POST");
  } else {
    std::string verb = target.substr(1);
    for (char& ch : verb) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    try {
      json parameters =
          request.method() == http::verb::post ? ParseJsonObject(request.body()) : json::object();
      answer = Dispatch(c, verb, parameters, peer);
    } catch (const Error& e) {
      answer.response = AnweddolResponse(false, kAnweddolBadRequest, json::object(), e.what());
    }
  }
  // Like the reference: HTTP 200, failure only in `success`; except too
  // many requests, which also says so in HTTP for proxies and scripts.
  HttpResponse response = JsonResponse(answer.retry_after ? 429 : 200, answer.response);
  if (answer.retry_after) {
    response.set(http::field::retry_after, std::to_string(answer.retry_after->count()));
  }
  return response;
}

}  // namespace ephemera

// The Anweddol verbs (CREATE, DESTROY, STAT) over the engine, shared by the
// classic encrypted protocol and the web protocol. Requests are validated
// as strictly as Anweddol's own sanitizer (unknown keys allowed); answers
// are {"success", "message", "data"} with Anweddol's messages and fields.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/access.h"
#include "api/http_server.h"
#include "engine/engine.h"

namespace ephemera {

struct AnweddolContext {
  Engine* engine = nullptr;
  AccessControl* access = nullptr;  // required: these doors are always remote
  std::string version;
  SandboxKind kind = SandboxKind::kVm;  // what these doors hand out (anweddol.kind)
  // Requests by door, verb and outcome (router.h's RegisterRequestMetrics).
  CounterFamily* requests = nullptr;
  std::string door = "anweddol_classic";
};

// Anweddol's response messages.
inline constexpr std::string_view kAnweddolOk = "OK";
inline constexpr std::string_view kAnweddolBadAuth = "Bad authentication";
inline constexpr std::string_view kAnweddolBadRequest = "Bad request";
inline constexpr std::string_view kAnweddolRefused = "Refused request";
inline constexpr std::string_view kAnweddolUnavailable = "Unavailable";
inline constexpr std::string_view kAnweddolInternal = "Internal error";

nlohmann::json AnweddolResponse(bool success, std::string_view message,
                                const nlohmann::json& data = nlohmann::json::object(),
                                std::string_view reason = {});

struct AnweddolRequest {
  std::string verb;  // upper case
  nlohmann::json parameters = nlohmann::json::object();
};
// {"verb": "CREATE", "parameters": {...}} checked as Anweddol's sanitizer
// does; kInvalidArgument saying what is wrong.
AnweddolRequest ParseAnweddolRequest(std::string_view body);

// A classic-protocol request body: {"verb": ..., "parameters": {...}}.
nlohmann::json HandleAnweddolRequest(const AnweddolContext& context, std::string_view body,
                                     const Peer& peer);
// One verb with its parameters (the web protocol's path and body).
nlohmann::json HandleAnweddolVerb(const AnweddolContext& context, std::string_view verb,
                                  const nlohmann::json& parameters, const Peer& peer);

// The web protocol: GET or POST /<verb>, POST body = the parameters.
HttpResponse HandleAnweddolWebRequest(const AnweddolContext& context, const HttpRequest& request,
                                      const Peer& peer);
// CREATE and DESTROY, which may take seconds (HttpServerOptions::is_slow).
bool IsSlowAnweddolWebRequest(const HttpRequest& request);

}  // namespace ephemera

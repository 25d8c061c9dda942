#include "api/router.h"

#include <spdlog/spdlog.h>

#include "api/wire.h"
#include "core/error.h"

namespace ephemera {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

HttpResponse Json(http::status status, const json& body) {
  HttpResponse response{status, 11};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  response.body() = body.dump() + "\n";
  return response;
}

constexpr std::string_view kSandboxes = "/v1/sandboxes";

HttpResponse Route(const ApiContext& c, const HttpRequest& request) {
  const std::string target_text(request.target());
  std::string_view target = target_text;
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  const auto method = request.method();

  if (target == "/v1/status") {
    if (method != http::verb::get)
      Fail(ErrorCode::kInvalidArgument, "method not allowed on {}", target);
    EngineStatus s = c.engine->Status();
    return Json(http::status::ok,
                {{"version", c.version},
                 {"sandboxes", s.sandboxes},
                 {"max_sandboxes", s.max_sandboxes},
                 {"available", s.max_sandboxes - std::min(s.max_sandboxes, s.sandboxes)},
                 {"uptime_seconds", s.uptime_seconds},
                 {"accelerator", c.accelerator}});
  }
  if (target == kSandboxes) {
    if (method == http::verb::post) {
      CreateResult result = c.engine->Create(ParseCreateRequest(request.body()));
      return Json(http::status::created, CreateResultToJson(result, c.client_host));
    }
    if (method == http::verb::get) {
      json list = json::array();
      for (const auto& s : c.engine->List()) list.push_back(SandboxToJson(s, c.client_host));
      return Json(http::status::ok, {{"sandboxes", list}});
    }
    Fail(ErrorCode::kInvalidArgument, "method not allowed on {}", target);
  }
  if (target.size() > kSandboxes.size() + 1 &&
      target.substr(0, kSandboxes.size() + 1) == "/v1/sandboxes/") {
    SandboxId id = SandboxId::Parse(target.substr(kSandboxes.size() + 1));
    if (method == http::verb::get) {
      auto sandbox = c.engine->Get(id);
      if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
      return Json(http::status::ok, SandboxToJson(*sandbox, c.client_host));
    }
    if (method == http::verb::delete_) {
      std::optional<std::string> token;
      if (auto it = request.find("X-Ephemera-Token"); it != request.end()) {
        token = std::string(it->value());
      }
      if (!c.admin && !token)
        Fail(ErrorCode::kPermissionDenied, "destroying needs the sandbox's client token");
      c.engine->Destroy(id, token);
      return Json(http::status::ok, {{"id", id.str()}, {"state", "destroyed"}});
    }
    Fail(ErrorCode::kInvalidArgument, "method not allowed on {}", target);
  }
  Fail(ErrorCode::kNotFound, "no such endpoint: {}", std::string(target).substr(0, 100));
}

}  // namespace

HttpResponse HandleApiRequest(const ApiContext& context, const HttpRequest& request) {
  try {
    return Route(context, request);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInternal) {
      spdlog::error("api: {} {}: {}", std::string(request.method_string()),
                    std::string(request.target()), e.what());
    }
    return Json(static_cast<http::status>(HttpStatusFor(e.code())), ErrorToJson(e));
  } catch (const std::exception& e) {
    spdlog::error("api: {} {}: {}", std::string(request.method_string()),
                  std::string(request.target()), e.what());
    return Json(http::status::internal_server_error,
                ErrorToJson(Error(ErrorCode::kInternal, e.what())));
  }
}

}  // namespace ephemera

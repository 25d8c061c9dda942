#include "ephemera/client.h"

#include "client/api_client.h"
#include "client/parse.h"
#include "client/transfer.h"
#include "core/base64.h"

namespace ephemera::client {

using nlohmann::json;

// The transport, kept out of the public header.
class Client::Transport {
 public:
  explicit Transport(ClientOptions options) : api(std::move(options)) {}
  ApiClient api;
};

namespace {

ClientOptions ToClientOptions(const Options& options) {
  ClientOptions o;
  o.socket = options.socket;
  if (!options.server.empty()) o.server = ParseServerUrl(options.server);
  if (!options.token.empty()) o.token = options.token;
  if (!options.pin.empty()) o.pin = NormalizeFingerprint(options.pin);
  o.notice = [](const std::string&) {};  // a library does not print
  return o;
}

Sandbox ToSandbox(const json& record) {
  Sandbox s;
  s.id = record.value("id", "");
  s.state = record.value("state", "");
  s.host = record.value("host", "");
  s.port = record.value("port", std::uint16_t{0});
  s.username = record.value("username", "");
  s.password = record.value("password", "");
  s.token = record.value("token", "");
  s.record = record;
  return s;
}

Headers TokenHeader(const std::string& token) {
  if (token.empty()) return {};
  return {{"X-Ephemera-Token", token}};
}

std::string SandboxPath(const std::string& id) { return "/v1/sandboxes/" + PathSegment(id); }

}  // namespace

Client::Client(Options options)
    : transport_(std::make_unique<Transport>(ToClientOptions(options))) {}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

Sandbox Client::Create(const json& request) {
  return ToSandbox(transport_->api.Request("POST", "/v1/sandboxes", request.dump()));
}

std::vector<Sandbox> Client::List() {
  std::vector<Sandbox> list;
  for (const json& record :
       transport_->api.Request("GET", "/v1/sandboxes").value("sandboxes", json::array())) {
    list.push_back(ToSandbox(record));
  }
  return list;
}

Sandbox Client::Show(const std::string& id) {
  return ToSandbox(transport_->api.Request("GET", SandboxPath(id)));
}

void Client::Destroy(const std::string& id, const std::string& token) {
  transport_->api.Request("DELETE", SandboxPath(id), "", TokenHeader(token));
}

Sandbox Client::Extend(const std::string& id, std::optional<long long> ttl_seconds,
                       const std::string& token) {
  json body = json::object();
  if (ttl_seconds) body["ttl_seconds"] = *ttl_seconds;
  return ToSandbox(
      transport_->api.Request("PATCH", SandboxPath(id), body.dump(), TokenHeader(token)));
}

ExecResult Client::Exec(const std::string& id, const std::vector<std::string>& argv,
                        const ExecOptions& options) {
  json body{{"argv", argv}};
  if (!options.env.empty()) body["env"] = options.env;
  if (!options.cwd.empty()) body["cwd"] = options.cwd;
  if (!options.user.empty()) body["user"] = options.user;
  if (options.stdin_data) body["stdin"] = *options.stdin_data;
  if (options.timeout_seconds > 0) body["timeout_seconds"] = options.timeout_seconds;
  ExecResult result;
  transport_->api.Request("POST", SandboxPath(id) + "/exec", body.dump(),
                          TokenHeader(options.token), [&](std::string_view line) {
                            json event = json::parse(line, nullptr, false);
                            if (!event.is_object()) return;
                            for (const char* name : {"stdout", "stderr"}) {
                              if (!event.contains(name) || !event[name].is_string()) continue;
                              std::optional<std::string> bytes =
                                  Base64Decode(event[name].get<std::string>());
                              if (!bytes)
                                throw Error(0, "the daemon sent output that is not base64");
                              const bool out = name[3] == 'o';
                              const auto& callback = out ? options.on_stdout : options.on_stderr;
                              if (callback) {
                                callback(*bytes);
                              } else {
                                (out ? result.out : result.err) += *bytes;
                              }
                            }
                            if (event.contains("exit") && event["exit"].is_object()) {
                              const json& exit = event["exit"];
                              if (exit.contains("code")) result.exit_code = exit["code"].get<int>();
                              if (exit.contains("signal"))
                                result.signal = exit["signal"].get<int>();
                              result.timed_out = exit.value("timed_out", false);
                            }
                          });
  return result;
}

void Client::Upload(const std::string& id, const std::filesystem::path& local,
                    const std::string& guest_path, const std::string& token) {
  CopyToGuest(transport_->api, TokenHeader(token), local.string(), id, guest_path, false);
}

void Client::Download(const std::string& id, const std::string& guest_path,
                      const std::filesystem::path& local, const std::string& token) {
  CopyFromGuest(transport_->api, TokenHeader(token), id, guest_path, local.string());
}

}  // namespace ephemera::client

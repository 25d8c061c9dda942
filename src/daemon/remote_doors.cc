#include "daemon/remote_doors.h"

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/fs.h"

namespace ephemera {

namespace {

boost::asio::ip::tcp::endpoint Endpoint(const ListenAddress& listen) {
  return {boost::asio::ip::make_address(listen.address), listen.port};
}

IpFilter Filter(const RemoteConfig& remote) {
  try {
    return IpFilter(remote.allow, remote.deny);
  } catch (const Error& e) {
    throw e.WithContext("config key 'remote'");
  }
}

// The metrics listener's answer: /metrics, or 404 / 405.
HttpResponse MetricsAnswer(Engine& engine, const HttpRequest& request) {
  namespace http = boost::beast::http;
  std::string_view target(request.target().data(), request.target().size());
  target = target.substr(0, target.find('?'));
  if (target == "/metrics" &&
      (request.method() == http::verb::get || request.method() == http::verb::head)) {
    return MetricsResponse(engine.metrics(), request.version());
  }
  HttpResponse response(http::status::not_found, request.version());
  if (target != "/metrics") {
    response.set(http::field::content_type, "text/plain");
    response.body() = "only /metrics is here\n";
  } else {
    response.result(http::status::method_not_allowed);
    response.set(http::field::allow, "GET, HEAD");
  }
  response.prepare_payload();
  return response;
}

}  // namespace

RemoteDoors::RemoteDoors(const Config& config, Engine& engine, ApiContext local_context,
                         FrontDoors& directory) {
  const RemoteConfig& r = config.remote;
  const AnweddolConfig& a = config.anweddol;
  nlohmann::json metrics_door = nlohmann::json::object();
  if (config.metrics.listen) {
    // Plain HTTP, GET /metrics alone: for a monitoring network, which the
    // operator chooses by the address.
    HttpServerOptions metrics_options;
    metrics_options.idle_timeout = std::chrono::seconds(30);
    metrics_options.io_timeout = std::chrono::seconds(15);
    metrics_options.workers = 2;
    metrics_options.max_connections = 16;
    metrics_options.max_connections_per_address = 8;
    metrics_server_ = std::make_unique<HttpServer>(
        HttpListener::Tcp(Endpoint(*config.metrics.listen), nullptr), metrics_options,
        [&engine](const HttpRequest& q, const Peer&) { return MetricsAnswer(engine, q); });
    metrics_door["metrics"] = {{"listen", metrics_server_->address()}};
    spdlog::info("metrics on http://{}/metrics", metrics_server_->address());
  }
  if (!r.listen && !a.listen && !a.web_listen) {
    directory.Set(std::move(metrics_door));
    return;
  }
  AccessPolicy policy{r.access_tokens, Filter(r), static_cast<double>(r.rate_limit_per_minute),
                      static_cast<double>(r.rate_limit_burst)};
  access_ = std::make_unique<AccessControl>(std::move(policy), engine);
  if (!r.access_tokens) {
    spdlog::warn(
        "remote front doors accept requests without access tokens "
        "(remote.access_tokens is off)");
  }
  const bool https = r.listen && !r.insecure_http;
  if (https || (a.web_listen && a.web_tls)) {
    identity_ = EnsureTlsIdentity(r.tls_certificate, r.tls_key, config.state_dir / "tls",
                                  local_context.client_host);
    tls_ = MakeServerTlsContext(*identity_);
    spdlog::info("TLS certificate {} sha256 {}", identity_->certificate.string(),
                 identity_->certificate_sha256);
  }
  HttpServerOptions http_options;
  http_options.max_connections = r.max_connections;
  http_options.max_connections_per_address = r.max_connections_per_address;
  http_options.idle_timeout = std::chrono::seconds(30);
  http_options.io_timeout = std::chrono::seconds(15);
  nlohmann::json doors = std::move(metrics_door);

  if (r.listen) {
    api_context_ = local_context;
    api_context_.access = access_.get();
    api_context_.door = https ? "https" : "http";
    HttpServerOptions api_options = http_options;
    api_options.is_slow = IsSlowApiRequest;
    api_options.streams_body = StreamsApiRequestBody;
    api_server_ = std::make_unique<HttpServer>(
        HttpListener::Tcp(Endpoint(*r.listen), https ? tls_ : nullptr, Admission()), api_options,
        HttpStreamingHandler([this](const HttpRequest& q, const Peer& p, HttpChunkSink& sink) {
          return HandleApiRequest(api_context_, q, p, &sink);
        }));
    doors["https"] = {{"listen", api_server_->address()}, {"tls", https}};
    if (https) doors["https"]["certificate_sha256"] = identity_->certificate_sha256;
    if (!https) spdlog::warn("/v1 on {} is plain HTTP (insecure_http)", api_server_->address());
    spdlog::info("remote /v1 API on {}{}", https ? "https://" : "http://", api_server_->address());
  }
  anweddol_context_ = {&engine, access_.get(),          local_context.version,
                       a.kind,  local_context.requests, "anweddol_classic"};
  anweddol_web_context_ = anweddol_context_;
  anweddol_web_context_.door = "anweddol_web";
  if (a.web_listen) {
    HttpServerOptions web_options = http_options;
    web_options.is_slow = IsSlowAnweddolWebRequest;
    web_server_ = std::make_unique<HttpServer>(
        HttpListener::Tcp(Endpoint(*a.web_listen), a.web_tls ? tls_ : nullptr, Admission()),
        web_options, [this](const HttpRequest& q, const Peer& p) {
          return HandleAnweddolWebRequest(anweddol_web_context_, q, p);
        });
    doors["anweddol_web"] = {{"listen", web_server_->address()}, {"tls", a.web_tls}};
    if (!a.web_tls && r.access_tokens) {
      spdlog::warn(
          "the Anweddol web protocol on {} is plain HTTP: access tokens cross the network in "
          "clear (anweddol.web_tls serves it over HTTPS)",
          web_server_->address());
    }
    if (a.web_tls) doors["anweddol_web"]["certificate_sha256"] = identity_->certificate_sha256;
    spdlog::info("Anweddol web protocol on {}", web_server_->address());
  }
  if (a.listen) {
    AnweddolClassicOptions options;
    options.listen = Endpoint(*a.listen);
    options.key_file = config.state_dir / "anweddol" / "rsa_key.pem";
    options.rsa_bits = a.rsa_bits;
    options.one_time_keys = a.one_time_keys;
    options.max_connections = r.max_connections;
    options.max_connections_per_peer = r.max_connections_per_address;
    MakeDirs(options.key_file.parent_path(), 0700);
    classic_server_ = std::make_unique<AnweddolClassicServer>(
        options,
        [this](std::string_view body, const boost::asio::ip::address& address) {
          return HandleAnweddolRequest(anweddol_context_, body, Peer{false, address});
        },
        Admission());
    ListenAddress bound = *a.listen;
    bound.port = classic_server_->port();
    doors["anweddol_classic"] = {{"listen", bound.str()},
                                 {"one_time_keys", a.one_time_keys},
                                 {"rsa_key_sha256", classic_server_->public_key_sha256()}};
    spdlog::info("Anweddol classic protocol on {} (RSA key sha256 {})", bound.str(),
                 a.one_time_keys ? "one-time" : classic_server_->public_key_sha256());
  }
  directory.Set(std::move(doors));
}

RemoteDoors::~RemoteDoors() = default;

std::function<bool(const boost::asio::ip::address&)> RemoteDoors::Admission() {
  return [this](const boost::asio::ip::address& address) {
    if (access_->AdmitsAddress(address)) return true;
    spdlog::debug("refused a connection from {} (IP filter)", address.to_string());
    return false;
  };
}

}  // namespace ephemera

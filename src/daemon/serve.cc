#include "daemon/serve.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "api/access.h"
#include "api/anweddol_classic_server.h"
#include "api/anweddol_verbs.h"
#include "api/http_server.h"
#include "api/router.h"
#include "api/tls.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "net/network_manager.h"
#include "provision/provisioner.h"
#include "store/store.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera {

namespace {

constexpr char kVersion[] = "0.1.0";

EngineOptions EngineOptionsFrom(const Config& c) {
  EngineOptions o;
  o.max_sandboxes = c.limits.max_sandboxes;
  o.max_parallel_creates = c.limits.max_parallel_creates;
  o.default_ttl = std::chrono::seconds(c.limits.default_ttl_seconds);
  o.max_ttl = std::chrono::seconds(c.limits.max_ttl_seconds);
  o.default_memory_mib = c.defaults.memory_mib;
  o.max_memory_mib = c.limits.max_memory_mib;
  o.default_vcpus = c.defaults.vcpus;
  o.max_vcpus = c.limits.max_vcpus;
  o.default_image = c.defaults.image;
  o.sshd_timeout = std::chrono::seconds(c.limits.sshd_timeout_seconds);
  if (!c.endpoint_password.empty()) o.endpoint_password = c.endpoint_password;
  return o;
}

std::string ClientHost(const Config& c) {
  if (!c.client_host.empty()) return c.client_host;
  if (c.network.forward_address != "0.0.0.0") return c.network.forward_address;
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

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

// The doors other machines use: HTTPS /v1, and Anweddol's web and classic
// protocols. They share one access control, one TLS identity and the
// engine; each runs its own accept loop and workers.
class RemoteDoors {
 public:
  RemoteDoors(const Config& config, Engine& engine, ApiContext local_context,
              FrontDoors& directory) {
    const RemoteConfig& r = config.remote;
    const AnweddolConfig& a = config.anweddol;
    if (!r.listen && !a.listen && !a.web_listen) return;
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
    http_options.idle_timeout = std::chrono::seconds(30);
    http_options.io_timeout = std::chrono::seconds(15);
    nlohmann::json doors = nlohmann::json::object();

    if (r.listen) {
      api_context_ = local_context;
      api_context_.access = access_.get();
      api_server_ = std::make_unique<HttpServer>(
          HttpListener::Tcp(Endpoint(*r.listen), https ? tls_ : nullptr, Admission()), http_options,
          [this](const HttpRequest& q, const Peer& p) {
            return HandleApiRequest(api_context_, q, p);
          });
      doors["https"] = {{"listen", api_server_->address()}, {"tls", https}};
      if (https) doors["https"]["certificate_sha256"] = identity_->certificate_sha256;
      if (!https) spdlog::warn("/v1 on {} is plain HTTP (insecure_http)", api_server_->address());
      spdlog::info("remote /v1 API on {}{}", https ? "https://" : "http://",
                   api_server_->address());
    }
    anweddol_context_ = {&engine, access_.get(), local_context.version};
    if (a.web_listen) {
      web_server_ = std::make_unique<HttpServer>(
          HttpListener::Tcp(Endpoint(*a.web_listen), a.web_tls ? tls_ : nullptr, Admission()),
          http_options, [this](const HttpRequest& q, const Peer& p) {
            return HandleAnweddolWebRequest(anweddol_context_, q, p);
          });
      doors["anweddol_web"] = {{"listen", web_server_->address()}, {"tls", a.web_tls}};
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

 private:
  // The IP filter, applied by every door as a connection is accepted.
  std::function<bool(const boost::asio::ip::address&)> Admission() {
    return [this](const boost::asio::ip::address& address) {
      if (access_->AdmitsAddress(address)) return true;
      spdlog::debug("refused a connection from {} (IP filter)", address.to_string());
      return false;
    };
  }

  std::unique_ptr<AccessControl> access_;
  std::optional<TlsIdentity> identity_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  ApiContext api_context_;
  AnweddolContext anweddol_context_;
  // Servers last: they stop (and drain their handlers) before the rest goes.
  std::unique_ptr<HttpServer> api_server_;
  std::unique_ptr<HttpServer> web_server_;
  std::unique_ptr<AnweddolClassicServer> classic_server_;
};

}  // namespace

int Serve(const Config& config) {
  // Signals are taken synchronously by this thread; every other thread
  // (created below) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  MakeDirs(config.state_dir, 0700);
  AccelChoice accel = ChooseAccel(config.vm.accel, ProbeKvm());
  spdlog::info("accelerator: {} ({})", AccelName(accel.accel), accel.reason);
  Store store(config.state_dir / "ephemera.db");
  ImageCatalog images(config.image_dir);
  // Digest the default image now (once per file version), not in the first create.
  try {
    Image image = images.Get(config.defaults.image);
    spdlog::info("default image '{}' version {} sha256 {}", image.name, image.version,
                 image.PrimarySha256());
  } catch (const Error& e) {
    spdlog::warn("default image: {}", e.what());
  }
  QemuDriver vms({config.state_dir, config.vm, accel});
  NetworkManager networks(config.state_dir, config.network);
  SshProvisioner provisioner;
  Engine engine(EngineOptionsFrom(config), store, images, vms, networks, provisioner);

  ReconcileReport report = engine.Reconcile();
  spdlog::info("reconcile: {} action(s)", report.actions.size());
  engine.StartReaper();
  store.AddEvent("daemon_start", "", kVersion);

  FrontDoors front_doors;
  ApiContext context{&engine,  ClientHost(config),
                     kVersion, fmt::format("{} ({})", AccelName(accel.accel), accel.reason),
                     nullptr,  &front_doors};
  auto remote = std::make_unique<RemoteDoors>(config, engine, context, front_doors);
  auto server = std::make_unique<HttpServer>(
      HttpListener::Unix(config.socket, config.socket_mode), HttpServerOptions{},
      [&context](const HttpRequest& r, const Peer& p) { return HandleApiRequest(context, r, p); });
  spdlog::info("listening on {} (images in {}, state in {})", config.socket.string(),
               config.image_dir.string(), config.state_dir.string());
  sd_notify(0, "READY=1\nSTATUS=serving");

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, stopping", strsignal(sig));
  sd_notify(0, "STOPPING=1");
  // No request may start a sandbox while they are being destroyed: close
  // the doors first (each finishes the requests it is serving).
  server.reset();
  remote.reset();
  if (config.destroy_on_exit) {
    engine.DestroyAll("the daemon stopped (destroy_on_exit)");
    networks.TeardownAll();
  } else {
    spdlog::info("sandboxes keep running and are adopted at the next start");
  }
  store.AddEvent("daemon_stop", "", strsignal(sig));
  return 0;
}

}  // namespace ephemera

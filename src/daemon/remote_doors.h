// The front doors other machines use: HTTPS /v1, Anweddol's web and
// classic protocols, and the metrics listener. They share one access control, one TLS identity and
// the engine; each runs its own accept loop and workers.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <functional>
#include <memory>
#include <optional>

#include "api/access.h"
#include "api/anweddol_classic_server.h"
#include "api/anweddol_verbs.h"
#include "api/http_server.h"
#include "api/router.h"
#include "api/tls.h"
#include "config/config.h"
#include "engine/engine.h"

namespace ephemera {

class RemoteDoors {
 public:
  // Starts every door the configuration turns on (none: nothing) and
  // lists them in `directory` for /v1/status. Errors name the setting.
  RemoteDoors(const Config& config, Engine& engine, ApiContext local_context,
              FrontDoors& directory);
  ~RemoteDoors();  // stops the doors; each finishes the requests it serves

 private:
  std::function<bool(const boost::asio::ip::address&)> Admission();

  std::unique_ptr<AccessControl> access_;
  std::optional<TlsIdentity> identity_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  ApiContext api_context_;
  AnweddolContext anweddol_context_;      // the classic protocol's
  AnweddolContext anweddol_web_context_;  // the web protocol's
  std::unique_ptr<HttpServer> metrics_server_;
  // Servers last: they stop (and drain their handlers) before the rest goes.
  std::unique_ptr<HttpServer> api_server_;
  std::unique_ptr<HttpServer> web_server_;
  std::unique_ptr<AnweddolClassicServer> classic_server_;
};

}  // namespace ephemera

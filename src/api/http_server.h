// An HTTP/1.1 server (Boost.Beast) on a unix socket. Connections are read
// and written asynchronously on one I/O thread with deadlines; handlers,
// which may block for seconds (a create boots a VM), run on a bounded
// worker pool.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <boost/beast/http.hpp>

namespace ephemera {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct UnixServerOptions {
  std::filesystem::path socket;
  unsigned mode = 0660;
  std::size_t workers = 8;
  std::size_t max_body = 64 * 1024;
  std::size_t max_connections = 256;
};

class UnixHttpServer {
 public:
  // Binds the socket (replacing a stale one, refusing one another process
  // still serves) and starts serving. kAlreadyExists, kPermissionDenied.
  UnixHttpServer(UnixServerOptions options, HttpHandler handler);
  ~UnixHttpServer();  // stops accepting, finishes, removes the socket file

  const std::filesystem::path& socket() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ephemera

// An HTTP/1.1 server (Boost.Beast) on one listener: a unix socket, plain
// TCP, or TCP with TLS. Connections are read and written asynchronously on
// one I/O thread with deadlines; handlers, which may block for seconds (a
// create boots a VM), run on a bounded worker pool.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>

namespace ephemera {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;

// Who sent a request: a process on the local socket (its uid from
// SO_PEERCRED), or a TCP peer.
struct Peer {
  bool local = false;
  boost::asio::ip::address address;  // unspecified for the local socket
  std::uint32_t uid = 65534;         // local only (SO_PEERCRED); nobody until known
  std::string ToString() const {
    return local ? (uid == 0 ? std::string("local") : "local uid " + std::to_string(uid))
                 : address.to_string();
  }
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&, const Peer&)>;

// Lets a handler answer in pieces while it works (chunked transfer coding).
// The first Send writes a 200 header with `content_type`, each Send one
// chunk; the response the handler then returns ends the answer, its body the
// last chunk (its status is lost by then: errors go in the body). A handler
// that never calls Send answers as usual.
// A request body read as the handler asks for it (routes that
// HttpServerOptions::streams_body names): never held whole in memory.
class HttpBodySource {
 public:
  virtual ~HttpBodySource() = default;
  // Up to `size` bytes into `buffer`; 0 at the end of the body. Throws
  // Error (kUnavailable) when the client stops sending or goes.
  virtual std::size_t Read(char* buffer, std::size_t size) = 0;
};

class HttpChunkSink {
 public:
  virtual ~HttpChunkSink() = default;
  // The request's body, for a request whose body streams; null otherwise.
  virtual HttpBodySource* body() { return nullptr; }
  // Ends a started answer without its last chunk, so that the client sees
  // it cut short rather than complete (a download that failed half-way).
  virtual void Abort() {}
  // False once the client has gone (checked without waiting).
  virtual bool ClientConnected() { return true; }
  // False once the client is gone or stalls past io_timeout; the handler
  // may go on (the rest is dropped).
  virtual bool Send(std::string_view content_type, std::string_view piece) = 0;
};
using HttpStreamingHandler =
    std::function<HttpResponse(const HttpRequest&, const Peer&, HttpChunkSink&)>;

struct HttpListener {
  // A unix socket when `socket` is set, else TCP on `endpoint`.
  std::filesystem::path socket;
  unsigned socket_mode = 0660;
  std::optional<std::uint32_t> socket_group;  // the socket's group (else root's)
  boost::asio::ip::tcp::endpoint endpoint;
  std::shared_ptr<boost::asio::ssl::context> tls;  // TCP only; null: plain HTTP
  // TCP only: a peer this refuses is closed at accept, before any TLS.
  std::function<bool(const boost::asio::ip::address&)> admit;

  static HttpListener Unix(std::filesystem::path socket, unsigned mode) {
    return {std::move(socket), mode, std::nullopt, {}, nullptr, {}};
  }
  static HttpListener Tcp(boost::asio::ip::tcp::endpoint endpoint,
                          std::shared_ptr<boost::asio::ssl::context> tls,
                          std::function<bool(const boost::asio::ip::address&)> admit = {}) {
    return {{}, 0, std::nullopt, endpoint, std::move(tls), std::move(admit)};
  }
};

struct HttpServerOptions {
  // Quick requests (status, list, show) run on `workers`; requests that
  // `is_slow` names (a create boots a VM) on `slow_workers` of their own,
  // so a burst of creates never stalls everyone else's quick ones.
  std::size_t workers = 8;
  std::size_t slow_workers = 32;
  std::function<bool(const HttpRequest&)> is_slow;
  // Requests (their header only) whose body the handler reads itself
  // through HttpChunkSink::body(), without max_body; they run as slow ones.
  std::function<bool(const HttpRequest&)> streams_body;
  std::size_t max_body = 64 * 1024;
  std::size_t max_connections = 256;             // open at once; more are closed at accept
  std::size_t max_connections_per_address = 32;  // TCP: so one peer cannot take them all
  std::chrono::seconds idle_timeout{60};         // waiting for the next request
  std::chrono::seconds io_timeout{30};  // TLS handshake, reading a started request, writing
};

class HttpServer {
 public:
  // Binds and starts serving. A unix socket replaces a stale file but
  // refuses one another process still serves (kAlreadyExists); a TCP
  // address in use is kUnavailable; kPermissionDenied for either.
  HttpServer(HttpListener listener, HttpServerOptions options, HttpHandler handler);
  HttpServer(HttpListener listener, HttpServerOptions options, HttpStreamingHandler handler);
  ~HttpServer();  // stops accepting, finishes, removes a unix socket file

  std::uint16_t port() const;   // the bound TCP port (0 for a unix socket)
  std::string address() const;  // "ADDR:PORT" or the socket path

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ephemera

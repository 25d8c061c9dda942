#include "api/http_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "api/peer_limits.h"
#include "core/error.h"

namespace ephemera {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using UnixSocket = asio::local::stream_protocol;
using tcp = asio::ip::tcp;
using UnixStream =
    beast::basic_stream<UnixSocket, asio::any_io_executor, beast::unlimited_rate_policy>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

namespace {

// Connections of the local socket that only root may take.
constexpr std::size_t kRootReserve = 8;

// The per-peer slot key of a local user.
std::string LocalPeerKey(std::uint32_t uid) { return "uid:" + std::to_string(uid); }

HttpResponse ProtocolError(http::error ec_kind) {
  const bool too_large = ec_kind == http::error::body_limit;
  HttpResponse bad{too_large ? http::status::payload_too_large : http::status::bad_request, 11};
  bad.set(http::field::content_type, "application/json");
  bad.body() = std::string(R"({"error":{"code":"invalid_argument","message":")") +
               (too_large ? "request body too large" : "malformed HTTP request") + "\"}}\n";
  bad.keep_alive(false);
  bad.prepare_payload();
  return bad;
}

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::size_t kStreamedBodyRead = 256 * 1024;

struct Shared {
  HttpServerOptions options;
  HttpStreamingHandler handler;
  asio::thread_pool* workers = nullptr;
  asio::thread_pool* slow_workers = nullptr;
  std::atomic<std::size_t> open{0};
  // Taken to hand a request to a worker and to set `stopping`, so that no
  // request reaches the pool after it has been joined.
  std::mutex dispatch;
  std::atomic<bool> stopping{false};      // set under `dispatch`
  std::atomic<std::size_t> answering{0};  // requests read but not yet answered

  // Open TCP connections per peer (IPv6 by /64).
  PeerSlots per_peer{options.max_connections_per_address};
};

HttpResponse InternalError() {
  HttpResponse response{http::status::internal_server_error, 11};
  response.set(http::field::content_type, "application/json");
  response.body() = R"({"error":{"code":"internal","message":"internal error"}})"
                    "\n";
  return response;
}

// One connection. Stream is a unix stream, a tcp_stream or a TLS stream over
// one; everything else is the same.
template <typename Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, Peer peer, Shared& shared)
      : stream_(std::move(stream)), peer_(std::move(peer)), shared_(shared) {
    ++shared_.open;
  }
  ~Session() {
    if (!peer_.local) shared_.per_peer.Release(PeerKey(peer_.address));
    if (peer_.local && peer_.uid != 0) shared_.per_peer.Release(LocalPeerKey(peer_.uid));
    --shared_.open;
  }

  void Start() {
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      beast::get_lowest_layer(stream_).expires_after(shared_.options.io_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) {
                                  spdlog::debug("https: TLS handshake with {} failed: {}",
                                                self->peer_.ToString(), ec.message());
                                  return;  // the socket closes with the session
                                }
                                self->Read();
                              });
    } else {
      Read();
    }
  }

 private:
  void Read() {
    header_parser_.emplace();
    header_parser_->header_limit(16 * 1024);
    // The body's limit is the route's, set once the header says which.
    header_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::get_lowest_layer(stream_).expires_after(shared_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *header_parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->OnHeader(ec);
                            });
  }

  // Whether a read failed for a reason worth no answer (the peer left).
  static bool Gone(const beast::error_code& ec) {
    return ec == http::error::end_of_stream || ec == beast::error::timeout ||
           ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
           ec == asio::error::connection_reset || ec == asio::error::operation_aborted;
  }

  void OnHeader(beast::error_code ec) {
    if (Gone(ec)) return Close();
    if (ec) return Write(ProtocolError(http::error::bad_method));
    HttpRequest head;
    head.base() = header_parser_->get().base();
    expects_continue_ = beast::iequals(head[http::field::expect], "100-continue");
    if (shared_.options.streams_body && shared_.options.streams_body(head)) {
      body_parser_.emplace(std::move(*header_parser_));
      body_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
      // Beast reads what the buffer has room for (512 bytes at the least):
      // room for whole pieces, or a streamed body costs a read per 512.
      buffer_.reserve(kStreamedBodyRead);
      request_ = std::move(head);
      return Dispatch(/*slow=*/true);
    }
    body_parser_.reset();
    buffer_.shrink_to_fit();  // a streamed body's room, kept no longer than it
    // Checked here, before any of it is read: the string body would reserve
    // a declared length up front.
    if (auto length = header_parser_->content_length();
        length && *length > shared_.options.max_body) {
      return Write(ProtocolError(http::error::body_limit));
    }
    parser_.emplace(std::move(*header_parser_));
    parser_->body_limit(shared_.options.max_body);
    auto read_body = [self = this->shared_from_this()] {
      beast::get_lowest_layer(self->stream_).expires_after(self->shared_.options.io_timeout);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec, std::size_t) { self->OnRead(ec); });
    };
    if (!expects_continue_ || parser_->is_done()) return read_body();
    // curl and others wait for this before they send a body.
    asio::async_write(stream_, asio::buffer(kContinue),
                      [read_body](beast::error_code, std::size_t) { read_body(); });
  }

  void OnRead(beast::error_code ec) {
    if (Gone(ec)) return Close();
    if (ec) {
      // Malformed or oversized: answer once, then close.
      return Write(ProtocolError(ec == http::error::body_limit ? http::error::body_limit
                                                               : http::error::bad_method));
    }
    request_ = parser_->release();
    Dispatch(shared_.options.is_slow && shared_.options.is_slow(request_));
  }

  void Dispatch(bool slow) {
    std::lock_guard dispatch(shared_.dispatch);
    if (shared_.stopping) return Close();
    ++shared_.answering;
    answering_ = true;
    // The handler may block: run it off the I/O thread, on the pool its
    // kind of request has.
    asio::post(slow ? *shared_.slow_workers : *shared_.workers, [self = this->shared_from_this()] {
      HttpResponse response;
      ChunkSink sink(*self);
      try {
        response = self->shared_.handler(self->request_, self->peer_, sink);
      } catch (const std::exception& e) {
        // Handlers answer errors themselves; this is a bug, not a reason to
        // take the daemon down.
        spdlog::error("http: handler failed for {}: {}", self->peer_.ToString(), e.what());
        response = InternalError();
      }
      // A body the handler left unread cannot be skipped to the next request.
      const bool body_left = self->body_parser_ && !self->body_parser_->is_done();
      if (sink.started()) return sink.Finish(response.body(), body_left);
      response.version(self->request_.version());
      response.keep_alive(self->request_.keep_alive() && response.keep_alive() && !body_left);
      response.prepare_payload();
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(response)]() mutable { self->Write(std::move(r)); });
    });
  }

  // The body of a request that streams it, read on the I/O thread as the
  // handler's worker asks, under io_timeout.
  class BodySource : public HttpBodySource {
   public:
    explicit BodySource(Session& session) : session_(session) {}
    std::size_t Read(char* buffer, std::size_t size) override {
      auto& parser = *session_.body_parser_;
      while (!parser.is_done() && size > 0) {
        std::promise<std::pair<beast::error_code, std::size_t>> done;
        auto result = done.get_future();
        asio::post(session_.stream_.get_executor(), [&] {
          auto read = [&] {
            auto& body = parser.get().body();
            body.data = buffer;
            body.size = size;
            beast::get_lowest_layer(session_.stream_)
                .expires_after(session_.shared_.options.io_timeout);
            http::async_read_some(session_.stream_, session_.buffer_, parser,
                                  [&](beast::error_code ec, std::size_t) {
                                    done.set_value({ec, size - parser.get().body().size});
                                  });
          };
          if (!std::exchange(continued_, true) && session_.expects_continue_) {
            asio::async_write(session_.stream_, asio::buffer(kContinue),
                              [read](beast::error_code, std::size_t) { read(); });
          } else {
            read();
          }
        });
        auto [ec, got] = result.get();
        if (ec && ec != http::error::need_buffer) {
          Fail(ErrorCode::kUnavailable, "the request's body stopped: {}", ec.message());
        }
        if (got > 0) return got;
      }
      return 0;
    }

   private:
    Session& session_;
    bool continued_ = false;
  };

  // A streamed answer, written from the handler's worker: each write runs
  // on the I/O thread while the worker waits for it, under io_timeout.
  class ChunkSink : public HttpChunkSink {
   public:
    explicit ChunkSink(Session& session) : session_(session) {
      if (session.body_parser_) body_.emplace(session);
    }
    bool started() const { return header_.has_value(); }
    HttpBodySource* body() override { return body_ ? &*body_ : nullptr; }

    void Abort() override { broken_ = true; }

    bool ClientConnected() override {
      if (broken_) return false;
      // The peer closed (a killed client): the socket reports it readable
      // with RDHUP; HTTP/1.1 clients never half-close while they wait.
      pollfd p{beast::get_lowest_layer(session_.stream_).socket().native_handle(), POLLRDHUP, 0};
      return !(::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0);
    }

    bool Send(std::string_view content_type, std::string_view piece) override {
      if (broken_) return false;
      if (!header_) {
        header_.emplace(http::status::ok, session_.request_.version());
        header_->set(http::field::content_type,
                     beast::string_view(content_type.data(), content_type.size()));
        header_->set(http::field::cache_control, "no-store");
        header_->chunked(true);
        header_->keep_alive(session_.request_.keep_alive());
        serializer_.emplace(*header_);
        if (!RunOnIo([this](auto done) {
              http::async_write_header(session_.stream_, *serializer_, std::move(done));
            })) {
          return false;
        }
      }
      if (piece.empty()) return true;  // an empty chunk would end the body
      piece_.assign(piece);
      return RunOnIo([this](auto done) {
        asio::async_write(session_.stream_, http::make_chunk(asio::buffer(piece_)),
                          std::move(done));
      });
    }

    // The handler's last words, then the end of the body, then the next
    // request (or the close).
    void Finish(const std::string& last, bool body_left) {
      if (!broken_ && !last.empty()) {
        piece_ = last;
        RunOnIo([this](auto done) {
          asio::async_write(session_.stream_, http::make_chunk(asio::buffer(piece_)),
                            std::move(done));
        });
      }
      if (!broken_) {
        RunOnIo([this](auto done) {
          asio::async_write(session_.stream_, http::make_chunk_last(), std::move(done));
        });
      }
      const bool keep = !broken_ && header_->keep_alive() && !body_left;
      asio::post(session_.stream_.get_executor(), [self = session_.shared_from_this(), keep] {
        if (self->answering_) {
          self->answering_ = false;
          --self->shared_.answering;
        }
        if (!keep || self->shared_.stopping) return self->Close();
        self->Read();
      });
    }

   private:
    template <typename Start>
    bool RunOnIo(Start start) {
      std::promise<beast::error_code> done;
      auto result = done.get_future();
      asio::post(session_.stream_.get_executor(), [&] {
        beast::get_lowest_layer(session_.stream_)
            .expires_after(session_.shared_.options.io_timeout);
        start([&done](beast::error_code ec, std::size_t) { done.set_value(ec); });
      });
      if (beast::error_code ec = result.get()) {
        spdlog::debug("http: streaming to {} stopped: {}", session_.peer_.ToString(), ec.message());
        broken_ = true;
      }
      return !broken_;
    }

    Session& session_;
    std::optional<http::response<http::empty_body>> header_;
    std::optional<http::response_serializer<http::empty_body>> serializer_;
    std::string piece_;
    bool broken_ = false;
    std::optional<BodySource> body_;
  };

  void Write(HttpResponse response) {
    response_ = std::make_shared<HttpResponse>(std::move(response));
    beast::get_lowest_layer(stream_).expires_after(shared_.options.io_timeout);
    http::async_write(stream_, *response_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (self->answering_) {
                          self->answering_ = false;
                          --self->shared_.answering;
                        }
                        if (ec || !self->response_->keep_alive() || self->shared_.stopping) {
                          return self->Close();
                        }
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        beast::get_lowest_layer(self->stream_)
            .socket()
            .shutdown(tcp::socket::shutdown_both, ignored);
      });
    } else {
      beast::get_lowest_layer(stream_).socket().shutdown(asio::socket_base::shutdown_send, ignored);
    }
  }

  Stream stream_;
  Peer peer_;
  Shared& shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_parser_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::request_parser<http::buffer_body>> body_parser_;  // a streamed body
  bool expects_continue_ = false;
  HttpRequest request_;
  std::shared_ptr<HttpResponse> response_;
  bool answering_ = false;
};

// An IPv4 peer on a dual-stack socket arrives IPv4-mapped; every door
// names it the same way.
asio::ip::address Unmapped(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address;
}

ErrorCode BindErrorCode(const beast::error_code& ec) {
  if (ec == asio::error::access_denied) return ErrorCode::kPermissionDenied;
  return ErrorCode::kUnavailable;
}

}  // namespace

struct HttpServer::Impl {
  // Declared so that whatever frees pending sessions (the worker pool's
  // queue, then the io_context) goes before what those sessions point at.
  HttpListener listener;
  Shared shared;
  asio::io_context io;
  UnixSocket::acceptor unix_acceptor{io};
  tcp::acceptor tcp_acceptor{io};
  asio::steady_timer accept_retry{io};
  // Keeps io.run() going while every session waits on a worker (no I/O
  // pending) after the acceptors close.
  asio::executor_work_guard<asio::io_context::executor_type> keep_running{io.get_executor()};
  asio::thread_pool workers;
  asio::thread_pool slow_workers;
  std::thread thread;

  Impl(HttpListener l, HttpServerOptions o, HttpStreamingHandler h)
      : listener(std::move(l)),
        shared{o, std::move(h)},
        workers(std::max<std::size_t>(1, o.workers)),
        slow_workers(std::max<std::size_t>(1, o.slow_workers)) {
    shared.workers = &workers;
    shared.slow_workers = &slow_workers;
  }

  // After an accept error (EMFILE, ENOBUFS) wait a little instead of
  // spinning on it.
  template <typename Again>
  void RetryAcceptLater(Again again) {
    accept_retry.expires_after(std::chrono::milliseconds(100));
    accept_retry.async_wait([again](beast::error_code ec) {
      if (!ec) again();
    });
  }

  bool OverLimit() const { return shared.open.load() >= shared.options.max_connections; }

  void AcceptUnix() {
    unix_acceptor.async_accept([this](beast::error_code ec, UnixSocket::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) return RetryAcceptLater([this] { AcceptUnix(); });
      if (OverLimit()) {
        socket.close();  // over the limit: refuse rather than queue without bound
      } else {
        // Who is calling, as the kernel says: a peer whose credentials
        // cannot be read is nobody in particular (never root).
        Peer peer{true, {}, 65534};
        struct ucred cred {};
        socklen_t len = sizeof cred;
        if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
          peer.uid = cred.uid;
        }
        // A local user may hold as many connections as one remote peer,
        // so that the socket always has room for root.
        if (peer.uid != 0 && (shared.open.load() + kRootReserve >= shared.options.max_connections ||
                              !shared.per_peer.Take(LocalPeerKey(peer.uid)))) {
          socket.close();
        } else {
          std::make_shared<Session<UnixStream>>(UnixStream(std::move(socket)), peer, shared)
              ->Start();
        }
      }
      AcceptUnix();
    });
  }

  void AcceptTcp() {
    tcp_acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) return RetryAcceptLater([this] { AcceptTcp(); });
      beast::error_code peer_ec;
      auto remote = socket.remote_endpoint(peer_ec);
      Peer peer{false, Unmapped(remote.address())};
      // Filtered addresses are dropped before any TLS work or buffer.
      if (OverLimit() || peer_ec || (listener.admit && !listener.admit(peer.address)) ||
          !shared.per_peer.Take(PeerKey(peer.address))) {
        socket.close();
      } else {
        socket.set_option(tcp::no_delay(true), peer_ec);
        if (listener.tls) {
          std::make_shared<Session<TlsStream>>(
              TlsStream(beast::tcp_stream(std::move(socket)), *listener.tls), peer, shared)
              ->Start();
        } else {
          std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), peer,
                                                       shared)
              ->Start();
        }
      }
      AcceptTcp();
    });
  }

  void ListenUnix() {
    const auto& path = listener.socket;
    std::error_code fs_ec;
    std::filesystem::create_directories(path.parent_path(), fs_ec);
    if (std::filesystem::exists(path)) {
      // A live server answers a connect; a stale file from a crash does not.
      UnixSocket::socket probe(io);
      beast::error_code ec;
      probe.connect(UnixSocket::endpoint(path.string()), ec);
      if (!ec) Fail(ErrorCode::kAlreadyExists, "another server is listening on {}", path.string());
      std::filesystem::remove(path, fs_ec);
    }
    beast::error_code ec;
    unix_acceptor.open(UnixSocket(), ec);
    if (!ec) unix_acceptor.bind(UnixSocket::endpoint(path.string()), ec);
    if (!ec) unix_acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) Fail(BindErrorCode(ec), "cannot listen on {}: {}", path.string(), ec.message());
    if (listener.socket_group && ::chown(path.c_str(), 0, *listener.socket_group) != 0) {
      FailErrno(fmt::format("cannot give {} its group", path.string()), errno);
    }
    if (::chmod(path.c_str(), listener.socket_mode) != 0) {
      FailErrno(fmt::format("cannot set {}'s mode", path.string()), errno);
    }
    AcceptUnix();
  }

  void ListenTcp() {
    const auto& endpoint = listener.endpoint;
    beast::error_code ec;
    tcp_acceptor.open(endpoint.protocol(), ec);
    if (!ec) tcp_acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) tcp_acceptor.bind(endpoint, ec);
    if (!ec) tcp_acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      Fail(BindErrorCode(ec), "cannot listen on {}:{}: {}", endpoint.address().to_string(),
           endpoint.port(), ec.message());
    }
    AcceptTcp();
  }
};

HttpServer::HttpServer(HttpListener listener, HttpServerOptions options, HttpHandler handler)
    : HttpServer(std::move(listener), std::move(options),
                 HttpStreamingHandler([handler = std::move(handler)](
                                          const HttpRequest& request, const Peer& peer,
                                          HttpChunkSink&) { return handler(request, peer); })) {}

HttpServer::HttpServer(HttpListener listener, HttpServerOptions options,
                       HttpStreamingHandler handler)
    : impl_(std::make_unique<Impl>(std::move(listener), options, std::move(handler))) {
  if (!impl_->listener.socket.empty()) {
    impl_->ListenUnix();
  } else {
    impl_->ListenTcp();
  }
  impl_->thread = std::thread([this] {
    // A handler's exception on the I/O thread costs its connection, never
    // the daemon.
    for (;;) {
      try {
        impl_->io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http: {} on the I/O thread: {}",
                      impl_->listener.socket.empty() ? std::string("a TCP listener")
                                                     : impl_->listener.socket.string(),
                      e.what());
      }
    }
  });
}

HttpServer::~HttpServer() {
  // Stop accepting and reading new requests, let the handlers running now
  // finish and their answers go out (for a few seconds at most), then stop.
  {
    std::lock_guard dispatch(impl_->shared.dispatch);
    impl_->shared.stopping = true;
  }
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->unix_acceptor.close(ignored);
    impl_->tcp_acceptor.close(ignored);
    impl_->accept_retry.cancel();
  });
  impl_->workers.join();
  impl_->slow_workers.join();
  for (int i = 0; i < 300 && impl_->shared.answering.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->io.stop();
  impl_->thread.join();
  if (!impl_->listener.socket.empty()) {
    std::error_code ec;
    std::filesystem::remove(impl_->listener.socket, ec);
  }
}

std::uint16_t HttpServer::port() const {
  if (!impl_->listener.socket.empty()) return 0;
  beast::error_code ec;
  return impl_->tcp_acceptor.local_endpoint(ec).port();
}

std::string HttpServer::address() const {
  if (!impl_->listener.socket.empty()) return impl_->listener.socket.string();
  beast::error_code ec;
  auto local = impl_->tcp_acceptor.local_endpoint(ec);
  if (local.address().is_v6())
    return fmt::format("[{}]:{}", local.address().to_string(), local.port());
  return fmt::format("{}:{}", local.address().to_string(), local.port());
}

}  // namespace ephemera

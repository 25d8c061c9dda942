#include "api/http_server.h"

#include <sys/stat.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <optional>
#include <thread>

#include "core/error.h"

namespace ephemera {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using UnixSocket = asio::local::stream_protocol;
using Stream = beast::basic_stream<UnixSocket, asio::any_io_executor, beast::unlimited_rate_policy>;
using namespace std::chrono_literals;

namespace {

constexpr auto kIdleTimeout = 60s;  // between requests on a kept-alive connection
constexpr auto kWriteTimeout = 30s;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(UnixSocket::socket socket, asio::thread_pool& workers, const HttpHandler& handler,
          std::size_t max_body, std::atomic<std::size_t>& open)
      : stream_(std::move(socket)),
        workers_(workers),
        handler_(handler),
        max_body_(max_body),
        open_(open) {
    ++open_;
  }
  ~Session() { --open_; }

  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(max_body_);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(kIdleTimeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof) {
      return Close();
    }
    if (ec) {
      // Malformed or oversized: answer once if the channel allows, then close.
      HttpResponse bad{ec == http::error::body_limit ? http::status::payload_too_large
                                                     : http::status::bad_request,
                       11};
      bad.set(http::field::content_type, "application/json");
      bad.body() =
          std::string(R"({"error":{"code":"invalid_argument","message":")") +
          (ec == http::error::body_limit ? "request body too large" : "malformed HTTP request") +
          "\"}}";
      bad.keep_alive(false);
      bad.prepare_payload();
      return Write(std::move(bad));
    }
    request_ = parser_->release();
    // The handler may block: run it off the I/O thread.
    asio::post(workers_, [self = shared_from_this()] {
      HttpResponse response = self->handler_(self->request_);
      response.version(self->request_.version());
      response.keep_alive(self->request_.keep_alive());
      response.prepare_payload();
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(response)]() mutable { self->Write(std::move(r)); });
    });
  }

  void Write(HttpResponse response) {
    response_ = std::make_shared<HttpResponse>(std::move(response));
    stream_.expires_after(kWriteTimeout);
    http::async_write(stream_, *response_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec || !self->response_->keep_alive()) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(UnixSocket::socket::shutdown_send, ignored);
  }

  Stream stream_;
  asio::thread_pool& workers_;
  const HttpHandler& handler_;
  std::size_t max_body_;
  std::atomic<std::size_t>& open_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;
  std::shared_ptr<HttpResponse> response_;
};

}  // namespace

struct UnixHttpServer::Impl {
  UnixServerOptions options;
  HttpHandler handler;
  asio::io_context io;
  asio::thread_pool workers;
  UnixSocket::acceptor acceptor{io};
  std::atomic<std::size_t> open_connections{0};
  std::thread thread;

  Impl(UnixServerOptions o, HttpHandler h)
      : options(std::move(o)),
        handler(std::move(h)),
        workers(std::max<std::size_t>(1, options.workers)) {}

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, UnixSocket::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        if (open_connections.load() >= options.max_connections) {
          socket.close();  // over the limit: refuse rather than queue without bound
        } else {
          std::make_shared<Session>(std::move(socket), workers, handler, options.max_body,
                                    open_connections)
              ->Start();
        }
      }
      Accept();
    });
  }
};

UnixHttpServer::UnixHttpServer(UnixServerOptions options, HttpHandler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {
  const auto& path = impl_->options.socket;
  std::error_code fs_ec;
  std::filesystem::create_directories(path.parent_path(), fs_ec);
  if (std::filesystem::exists(path)) {
    // A live server answers a connect; a stale file from a crash does not.
    UnixSocket::socket probe(impl_->io);
    beast::error_code ec;
    probe.connect(UnixSocket::endpoint(path.string()), ec);
    if (!ec) Fail(ErrorCode::kAlreadyExists, "another server is listening on {}", path.string());
    std::filesystem::remove(path, fs_ec);
  }
  beast::error_code ec;
  impl_->acceptor.open(UnixSocket(), ec);
  if (!ec) impl_->acceptor.bind(UnixSocket::endpoint(path.string()), ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    Fail(ec == asio::error::access_denied ? ErrorCode::kPermissionDenied : ErrorCode::kUnavailable,
         "cannot listen on {}: {}", path.string(), ec.message());
  }
  ::chmod(path.c_str(), impl_->options.mode);
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

UnixHttpServer::~UnixHttpServer() {
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->workers.join();
  impl_->io.stop();
  impl_->thread.join();
  std::error_code ec;
  std::filesystem::remove(impl_->options.socket, ec);
}

const std::filesystem::path& UnixHttpServer::socket() const { return impl_->options.socket; }

}  // namespace ephemera

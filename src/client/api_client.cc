#include "client/api_client.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <limits>

#include "client/servers.h"
#include "core/asio_step.h"

namespace ephemera::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

using HttpRequest = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// The SHA-256 of a certificate's DER encoding, as hex; empty on failure.
std::string CertificateSha256(X509* certificate) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned size = 0;
  if (!certificate || X509_digest(certificate, EVP_sha256(), digest, &size) != 1) return "";
  return Hex(digest, size);
}

// The state of one handshake's certificate check.
struct PinCheck {
  std::optional<std::string> expected;  // none: first contact
  std::string presented;
};

// Replaces OpenSSL's chain verification: the daemon's certificate is usually
// self-signed, so the only question is whether the leaf is the pinned one.
// Refusing here aborts the handshake before any request byte is written.
int VerifyLeaf(X509_STORE_CTX* store, void* arg) {
  auto* check = static_cast<PinCheck*>(arg);
  check->presented = CertificateSha256(X509_STORE_CTX_get0_cert(store));
  if (check->presented.empty() || (check->expected && *check->expected != check->presented)) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    return 0;
  }
  return 1;
}

std::string ChangedMessage(const std::string& server, const std::string& pinned,
                           const std::string& presented, const std::string& file) {
  return "refusing " + server +
         ": its TLS certificate has changed\n"
         "  pinned:    sha256 " +
         pinned + "\n  presented: sha256 " + presented +
         "\n"
         "  Nothing was sent to it. Someone may be intercepting the connection, or the\n"
         "  server has a new certificate. If you trust the new one (compare it with the\n"
         "  certificate_sha256 that `ephemera status` shows on the server), forget the\n"
         "  old pin and retry:\n"
         "    ephemera server forget " +
         server + "\n  (or pass --pin " + presented + "; pins are kept in " + file + ")";
}

std::string PinMismatchMessage(const std::string& server, const std::string& demanded,
                               const std::string& presented) {
  return "refusing " + server +
         ": its TLS certificate is not the one given with --pin\n"
         "  demanded:  sha256 " +
         demanded + "\n  presented: sha256 " + presented + "\n  Nothing was sent to it.";
}

// Writes the request and reads the answer on a connected stream. A
// streamed answer (`on_line`, `on_data`) is handed on piece by piece and
// not kept: only its last line (the answer proper) or, for an error, its body.
template <typename Stream, typename Cancel, typename Request>
Response Exchange(asio::io_context& io, Stream& stream, Cancel cancel, Request& request,
                  const ClientOptions& options, const std::string& where, const LineFn& on_line,
                  const DataFn& on_data) {
  const Timeouts& t = options.timeouts;
  // One bounded step of the exchange: `start` begins the operation with the
  // completion handler it is given.
  auto step = [&](std::chrono::milliseconds timeout, auto start) {
    beast::error_code ec = RunStep(
        io, timeout,
        [&](auto done) { start([done](beast::error_code e, std::size_t) mutable { done(e); }); },
        cancel);
    if (ec) {
      throw ApiError(
          0, "talking to ephemerad at " + where + " failed: " + DescribeStepError(ec, timeout));
    }
  };
  beast::flat_buffer buffer;
  http::serializer<true, typename Request::body_type, typename Request::fields_type> serializer{
      request};
  if (beast::iequals(request[http::field::expect], "100-continue")) {
    // The header alone first: a server that refuses the request (too large,
    // no such sandbox) says so before any of the body is sent, and its
    // answer is what the caller sees, not a broken pipe.
    step(t.write, [&](auto handler) { http::async_write_header(stream, serializer, handler); });
    http::response_parser<http::string_body> interim;
    interim.body_limit(options.max_response_body);
    step(t.response, [&](auto handler) { http::async_read(stream, buffer, interim, handler); });
    if (interim.get().result() != http::status::continue_) return interim.release();
  }
  step(t.write, [&](auto handler) { http::async_write(stream, serializer, handler); });
  http::response_parser<http::string_body> parser;
  if (!on_line && !on_data) {
    parser.body_limit(options.max_response_body);
    step(t.response, [&](auto handler) { http::async_read(stream, buffer, parser, handler); });
    return parser.release();
  }
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // what is handed on is not kept
  std::string last_line;
  while (!parser.is_done()) {
    step(t.response, [&](auto handler) { http::async_read_some(stream, buffer, parser, handler); });
    if (!parser.is_header_done()) continue;
    std::string& body = parser.get().body();
    const bool ok = parser.get().result_int() / 100 == 2;
    if (!ok) {
      if (body.size() > options.max_response_body) throw ApiError(0, "an error answer too long");
      continue;  // kept for the message
    }
    if (on_data && parser.get()[http::field::content_type] != "application/json") {
      if (!body.empty()) on_data(body);
      body.clear();
      continue;
    }
    if (!on_line || parser.get()[http::field::content_type] != "application/x-ndjson") {
      // A plain answer to a streaming request: kept whole, as for any request.
      if (body.size() > options.max_response_body) throw ApiError(0, "an answer too long");
      continue;
    }
    std::size_t scanned = 0;
    for (auto nl = body.find('\n'); nl != std::string::npos; nl = body.find('\n', scanned)) {
      last_line = body.substr(scanned, nl - scanned);
      on_line(last_line);
      scanned = nl + 1;
    }
    body.erase(0, scanned);
    if (body.size() > options.max_response_body) throw ApiError(0, "a streamed line too long");
  }
  Response response = parser.release();
  if (on_line && response.result_int() / 100 == 2 &&
      response[http::field::content_type] == "application/x-ndjson") {
    response.body() = last_line + response.body();
  }
  return response;
}

tcp::resolver::results_type Resolve(asio::io_context& io, const ServerUrl& server,
                                    const Timeouts& t) {
  tcp::resolver resolver(io);
  tcp::resolver::results_type results;
  beast::error_code ec = RunStep(
      io, t.connect,
      [&](auto done) {
        resolver.async_resolve(
            server.host, std::to_string(server.port),
            [&results, done](beast::error_code e, tcp::resolver::results_type r) mutable {
              results = std::move(r);
              done(e);
            });
      },
      [&] { resolver.cancel(); });
  if (ec) {
    throw ApiError(0, "cannot resolve " + server.host + " (" + server.str() +
                          "): " + DescribeStepError(ec, t.connect));
  }
  return results;
}

void Connect(asio::io_context& io, tcp::socket& socket, const tcp::resolver::results_type& where,
             const ServerUrl& server, const Timeouts& t) {
  beast::error_code ec = RunStep(
      io, t.connect,
      [&](auto done) {
        asio::async_connect(socket, where,
                            [done](beast::error_code e, const tcp::endpoint&) mutable { done(e); });
      },
      [&] {
        beast::error_code ignored;
        socket.close(ignored);
      });
  if (ec) {
    throw ApiError(
        0, "cannot reach ephemerad at " + server.str() + ": " + DescribeStepError(ec, t.connect));
  }
}

}  // namespace

ApiClient::ApiClient(std::filesystem::path socket) { options_.socket = std::move(socket); }

ApiClient::ApiClient(ClientOptions options) : options_(std::move(options)) {}

std::string ApiClient::where() const {
  return options_.server ? options_.server->str() : options_.socket.string();
}

void ApiClient::Notice(const std::string& message) const {
  if (options_.notice) {
    options_.notice(message);
  } else {
    std::fprintf(stderr, "ephemera: %s\n", message.c_str());
  }
}

void ApiClient::RememberToken() {
  if (token_remembered_ || !options_.remember_token || !options_.server || !options_.token) return;
  ServerStore store(options_.servers_file);
  const std::string url = options_.server->str();
  auto entry = store.Get(url);
  if (!entry || entry->token != options_.token) store.SetToken(url, *options_.token);
  token_remembered_ = true;
}

nlohmann::json ApiClient::Request(const std::string& method, const std::string& target,
                                  const std::string& body, const Headers& headers,
                                  const LineFn& on_line) {
  HttpRequest request{http::string_to_verb(method), target, 11};
  Prepare(request, headers);
  if (on_line) request.set(http::field::accept, "application/x-ndjson, application/json");
  if (!body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
  }
  request.prepare_payload();
  return Perform(request, on_line, {});
}

nlohmann::json ApiClient::Download(const std::string& target, const DataFn& on_data,
                                   const Headers& headers) {
  HttpRequest request{http::verb::get, target, 11};
  Prepare(request, headers);
  return Perform(request, {}, on_data);
}

nlohmann::json ApiClient::Upload(const std::string& method, const std::string& target,
                                 const std::filesystem::path& file, const std::string& content_type,
                                 const Headers& headers) {
  http::request<http::file_body> request{http::string_to_verb(method), target, 11};
  Prepare(request, headers);
  request.set(http::field::content_type, content_type);
  beast::error_code ec;
  request.body().open(file.c_str(), beast::file_mode::scan, ec);
  if (ec) throw ApiError(0, "cannot read " + file.string() + ": " + ec.message());
  request.set(http::field::expect, "100-continue");
  request.prepare_payload();
  return Perform(request, {}, {});
}

template <typename Message>
void ApiClient::Prepare(Message& request, const Headers& headers) {
  request.set(http::field::host, options_.server ? options_.server->authority() : "localhost");
  request.set(http::field::user_agent, "ephemera-cli");
  // The local socket's authority is its file mode; a token is for servers.
  if (options_.server && options_.token) {
    request.set(http::field::authorization, "Bearer " + *options_.token);
  }
  for (const auto& [name, value] : headers) request.set(name, value);
}

template <typename Message>
nlohmann::json ApiClient::Perform(Message& request, const LineFn& on_line, const DataFn& on_data) {
  asio::io_context io;
  const Timeouts& t = options_.timeouts;
  const std::string where = this->where();
  Response response;
  if (!options_.server) {
    asio::local::stream_protocol::socket socket(io);
    auto close = [&] {
      beast::error_code ignored;
      socket.close(ignored);
    };
    beast::error_code ec = RunStep(
        io, t.connect,
        [&](auto done) {
          socket.async_connect(asio::local::stream_protocol::endpoint(options_.socket.string()),
                               [done](beast::error_code e) mutable { done(e); });
        },
        close);
    if (ec)
      throw ApiError(
          0, "cannot reach ephemerad at " + where + ": " + DescribeStepError(ec, t.connect));
    response = Exchange(io, socket, close, request, options_, where, on_line, on_data);
  } else if (!options_.server->tls) {
    if (options_.token && !warned_plain_token_) {
      std::fprintf(stderr,
                   "ephemera: warning: %s is plain HTTP: the access token travels "
                   "unencrypted\n",
                   where.c_str());
      warned_plain_token_ = true;
    }
    tcp::socket socket(io);
    Connect(io, socket, Resolve(io, *options_.server, t), *options_.server, t);
    response = Exchange(
        io, socket,
        [&] {
          beast::error_code ignored;
          socket.close(ignored);
        },
        request, options_, where, on_line, on_data);
  } else {
    // Read before connecting: a corrupt store stops us before any traffic.
    ServerStore store(options_.servers_file);
    auto known = store.Get(where);
    PinCheck check;
    if (options_.pin) {
      check.expected = *options_.pin;
    } else if (known && known->certificate_sha256) {
      check.expected = *known->certificate_sha256;
    }

    ssl::context context(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
    context.set_verify_mode(ssl::verify_peer);
    SSL_CTX_set_cert_verify_callback(context.native_handle(), &VerifyLeaf, &check);
    beast::ssl_stream<tcp::socket> stream(io, context);
    if (!options_.server->host_is_address() &&
        !SSL_set_tlsext_host_name(stream.native_handle(), options_.server->host.c_str())) {
      throw ApiError(0, "cannot set the TLS server name " + options_.server->host);
    }
    auto close = [&] {
      beast::error_code ignored;
      beast::get_lowest_layer(stream).close(ignored);
    };
    Connect(io, beast::get_lowest_layer(stream), Resolve(io, *options_.server, t), *options_.server,
            t);
    beast::error_code ec = RunStep(
        io, t.connect,
        [&](auto done) {
          stream.async_handshake(ssl::stream_base::client,
                                 [done](beast::error_code e) mutable { done(e); });
        },
        close);
    if (check.expected && !check.presented.empty() && check.presented != *check.expected) {
      close();
      if (options_.pin)
        throw CertificateRejected(PinMismatchMessage(where, *options_.pin, check.presented));
      throw CertificateRejected(
          ChangedMessage(where, *check.expected, check.presented, store.file().string()));
    }
    if (ec) {
      throw ApiError(
          0, "TLS handshake with " + where + " failed: " + DescribeStepError(ec, t.connect));
    }
    // The handshake succeeded, so VerifyLeaf accepted this very certificate;
    // compare once more so that no other code path can skip the check.
    const std::string presented =
        CertificateSha256(SSL_get0_peer_certificate(stream.native_handle()));
    if (presented.empty() || presented != check.presented) {
      close();
      throw CertificateRejected("refusing " + where + ": its TLS certificate could not be checked");
    }
    if (options_.pin) {
      // A fingerprint the user vouched for becomes the pin for later commands.
      if (!known || known->certificate_sha256 != presented) {
        store.SetPin(where, presented);
        Notice("pinned the TLS certificate of " + where + " given with --pin (sha256 " + presented +
               ")");
      }
    } else if (!check.expected) {
      std::string pinned = store.PinIfUnpinned(where, presented);
      if (pinned != presented) {
        close();
        throw CertificateRejected(ChangedMessage(where, pinned, presented, store.file().string()));
      }
      Notice("first contact with " + where +
             ": trusting its TLS certificate from now on\n"
             "  certificate sha256 " +
             presented +
             "\n"
             "  (compare it with the certificate_sha256 that `ephemera status` shows on the\n"
             "  server; the pin is kept in " +
             store.file().string() + ")");
    }
    response = Exchange(io, stream, close, request, options_, where, on_line, on_data);
  }

  // A streamed answer ends with the answer proper: its last line.
  std::string_view answer = response.body();
  if (on_data && response.result_int() / 100 == 2 &&
      response[http::field::content_type] != "application/json") {
    RememberToken();
    return nlohmann::json::object();  // the bytes went to on_data
  }
  if (response[http::field::content_type] == "application/x-ndjson") {
    while (!answer.empty() && answer.back() == '\n') answer.remove_suffix(1);
    answer =
        answer.substr(answer.rfind('\n') == std::string_view::npos ? 0 : answer.rfind('\n') + 1);
  }
  nlohmann::json json = nlohmann::json::parse(answer, nullptr, false);
  unsigned status = response.result_int();
  // An error after the stream began comes as its last line under a 200.
  if (status / 100 == 2 && json.is_object() && json.contains("error")) status = 500;
  if (status / 100 != 2) {
    std::string message = "HTTP " + std::to_string(status);
    if (json.is_object() && json.contains("error") && json["error"].is_object() &&
        json["error"].contains("message") && json["error"]["message"].is_string()) {
      message = json["error"]["message"].get<std::string>();
    }
    throw ApiError(status, message);
  }
  if (json.is_discarded()) throw ApiError(status, "ephemerad sent a body that is not JSON");
  RememberToken();
  return json;
}

}  // namespace ephemera::client

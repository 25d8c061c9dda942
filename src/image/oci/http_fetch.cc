#include "image/oci/http_fetch.h"

#include <openssl/x509v3.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <charconv>
#include <limits>

#include "core/asio_step.h"
#include "core/error.h"
#include "core/text.h"

namespace ephemera::oci {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

std::string Lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsRedirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// One connection, one request: the stream is plain TCP or TLS over it.
class Exchange {
 public:
  Exchange(const HttpUrl& url, const HttpOptions& options) : url_(url), options_(options) {}

  HttpResponse Run(const HttpHeaders& headers, const BodySink& sink, std::size_t max_kept) {
    if (!url_.tls) {
      tcp::socket socket(io_);
      Connect(socket);
      return Transfer(
          socket, [&] { Close(socket); }, headers, sink, max_kept);
    }
    ssl::context context(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
    beast::error_code ec;
    if (options_.ca_file.empty()) {
      context.set_default_verify_paths(ec);
    } else {
      context.load_verify_file(options_.ca_file.string(), ec);
    }
    if (ec) {
      Fail(ErrorCode::kFailedPrecondition, "{}: cannot load the CA certificates {}: {}", url_.str(),
           options_.ca_file.empty() ? "of the system" : options_.ca_file.string(), ec.message());
    }
    context.set_verify_mode(ssl::verify_peer);
    const std::string bare_host =
        url_.host.starts_with('[') ? url_.host.substr(1, url_.host.size() - 2) : url_.host;
    beast::ssl_stream<tcp::socket> stream(io_, context);
    // The name (or address) is checked by OpenSSL's own chain verification,
    // so a mismatch is reported as one.
    X509_VERIFY_PARAM* param = SSL_get0_param(stream.native_handle());
    beast::error_code not_address;
    asio::ip::make_address(bare_host, not_address);
    const bool set =
        not_address ? X509_VERIFY_PARAM_set1_host(param, bare_host.c_str(), 0) == 1 &&
                          SSL_set_tlsext_host_name(stream.native_handle(), bare_host.c_str()) == 1
                    : X509_VERIFY_PARAM_set1_ip_asc(param, bare_host.c_str()) == 1;
    if (!set) Fail(ErrorCode::kInternal, "{}: cannot set the TLS peer name", url_.str());
    auto close = [&] { Close(beast::get_lowest_layer(stream)); };
    Connect(beast::get_lowest_layer(stream));
    ec = RunStep(
        io_, options_.connect_timeout,
        [&](auto done) {
          stream.async_handshake(ssl::stream_base::client,
                                 [done](beast::error_code e) mutable { done(e); });
        },
        close);
    if (ec) {
      std::string why = DescribeStepError(ec, options_.connect_timeout);
      const long verify = SSL_get_verify_result(stream.native_handle());
      if (verify != X509_V_OK) {
        why = std::string("its certificate is not trusted: ") +
              X509_verify_cert_error_string(verify) +
              (options_.ca_file.empty() ? " (no ca_file is configured for it)"
                                        : " (checked against " + options_.ca_file.string() + ")");
      }
      Fail(ErrorCode::kUnavailable, "{}: TLS handshake failed: {}", url_.str(), why);
    }
    return Transfer(stream, close, headers, sink, max_kept);
  }

 private:
  static void Close(tcp::socket& socket) {
    beast::error_code ignored;
    socket.close(ignored);
  }

  void Connect(tcp::socket& socket) {
    tcp::resolver resolver(io_);
    tcp::resolver::results_type results;
    const std::string host =
        url_.host.starts_with('[') ? url_.host.substr(1, url_.host.size() - 2) : url_.host;
    beast::error_code ec = RunStep(
        io_, options_.connect_timeout,
        [&](auto done) {
          resolver.async_resolve(
              host, std::to_string(url_.port),
              [&results, done](beast::error_code e, tcp::resolver::results_type r) mutable {
                results = std::move(r);
                done(e);
              });
        },
        [&] { resolver.cancel(); });
    if (ec) {
      Fail(ErrorCode::kUnavailable, "{}: cannot resolve {}: {}", url_.str(), host,
           DescribeStepError(ec, options_.connect_timeout));
    }
    ec = RunStep(
        io_, options_.connect_timeout,
        [&](auto done) {
          asio::async_connect(
              socket, results,
              [done](beast::error_code e, const tcp::endpoint&) mutable { done(e); });
        },
        [&] { Close(socket); });
    if (ec) {
      Fail(ErrorCode::kUnavailable, "{}: cannot connect: {}", url_.str(),
           DescribeStepError(ec, options_.connect_timeout));
    }
  }

  template <typename Stream, typename Cancel>
  HttpResponse Transfer(Stream& stream, Cancel cancel, const HttpHeaders& headers,
                        const BodySink& sink, std::size_t max_kept) {
    http::request<http::empty_body> request{http::verb::get, url_.target, 11};
    request.set(http::field::host, url_.authority());
    request.set(http::field::user_agent, "ephemera");
    request.set(http::field::connection, "close");
    for (const auto& [name, value] : headers) request.set(name, value);
    const auto stall = options_.stall_timeout;
    beast::error_code ec = RunStep(
        io_, stall,
        [&](auto done) {
          http::async_write(stream, request,
                            [done](beast::error_code e, std::size_t) mutable { done(e); });
        },
        cancel);
    if (ec)
      Fail(ErrorCode::kUnavailable, "{}: sending the request failed: {}", url_.str(),
           DescribeStepError(ec, stall));

    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // the sink or max_kept bounds it
    ec = RunStep(
        io_, stall,
        [&](auto done) {
          http::async_read_header(stream, buffer, parser,
                                  [done](beast::error_code e, std::size_t) mutable { done(e); });
        },
        cancel);
    if (ec) {
      Fail(ErrorCode::kUnavailable, "{}: no answer: {}", url_.str(), DescribeStepError(ec, stall));
    }
    HttpResponse response;
    response.url = url_;
    response.status = parser.get().result_int();
    for (const auto& field : parser.get()) {
      std::string& value = response.headers[Lowercase(std::string(field.name_string()))];
      value += (value.empty() ? "" : ", ") + std::string(field.value());
    }
    const bool to_sink = sink && response.status / 100 == 2;
    std::uint64_t received = 0;
    std::vector<char> chunk(1 << 16);
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      ec = RunStep(
          io_, stall,
          [&](auto done) {
            http::async_read(stream, buffer, parser,
                             [done](beast::error_code e, std::size_t) mutable { done(e); });
          },
          cancel);
      if (ec == http::error::need_buffer) ec = {};
      // What came before an error counts: the message says how far it got.
      const std::size_t n = chunk.size() - parser.get().body().size;
      received += n;
      if (!ec && to_sink) {
        if (n) sink(chunk.data(), n);
      } else if (!ec) {
        if (response.body.size() + n > max_kept) {
          Fail(ErrorCode::kInvalidArgument, "{}: the answer is over {} bytes", url_.str(),
               max_kept);
        }
        response.body.append(chunk.data(), n);
      }
      if (ec) {
        Fail(ErrorCode::kUnavailable, "{}: the body stopped after {} bytes: {}", url_.str(),
             received,
             ec == http::error::partial_message ? "the connection closed early"
                                                : DescribeStepError(ec, stall));
      }
    }
    cancel();
    return response;
  }

  asio::io_context io_;
  HttpUrl url_;
  const HttpOptions& options_;
};

}  // namespace

HttpUrl HttpUrl::Parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    Fail(ErrorCode::kInvalidArgument, "URL '{}': {}", EscapeForLog(text, 200), why);
  };
  HttpUrl url;
  std::string_view rest = text;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    url.tls = false;
    url.port = 80;
    rest.remove_prefix(7);
  } else {
    bad("only http:// and https:// are taken");
  }
  const auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  url.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (url.target.starts_with('?')) url.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) bad("credentials in a URL are not taken");
  std::string_view port;
  bool has_port = false;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) bad("an unclosed [");
    url.host = std::string(authority.substr(0, close + 1));
    authority.remove_prefix(close + 1);
    if (authority.starts_with(':')) {
      port = authority.substr(1);
      has_port = true;
    } else if (!authority.empty()) {
      bad("junk after the address");
    }
  } else {
    const auto colon = authority.find(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (url.host.empty()) bad("no host");
  for (char c : url.host) {
    if (std::iscntrl(static_cast<unsigned char>(c)) || c == ' ') bad("a control character");
  }
  if (has_port) {
    unsigned value = 0;
    auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (err != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      bad("a port is 1 to 65535");
    }
    url.port = static_cast<std::uint16_t>(value);
  }
  for (char c : url.target) {
    if (std::iscntrl(static_cast<unsigned char>(c)) || c == ' ') bad("a control character");
  }
  return url;
}

HttpUrl HttpUrl::Resolve(std::string_view location) const {
  if (location.starts_with("http://") || location.starts_with("https://")) {
    return Parse(location);
  }
  if (!location.starts_with('/') || location.starts_with("//")) {
    Fail(ErrorCode::kInvalidArgument, "{}: a redirect to '{}' is neither absolute nor a path",
         str(), EscapeForLog(location, 200));
  }
  HttpUrl next = *this;
  next.target = std::string(location);
  return Parse(next.str());  // checks the new target
}

std::string HttpUrl::authority() const {
  const bool default_port = port == (tls ? 443 : 80);
  return default_port ? host : host + ":" + std::to_string(port);
}

std::string HttpUrl::str() const { return (tls ? "https://" : "http://") + authority() + target; }

HttpResponse HttpGet(const HttpUrl& url, const HttpHeaders& headers, const HttpOptions& options,
                     const BodySink& sink, std::size_t max_kept_body) {
  HttpUrl at = url;
  HttpHeaders sent = headers;
  for (int hop = 0;; ++hop) {
    HttpResponse response = Exchange(at, options).Run(sent, sink, max_kept_body);
    if (!IsRedirect(response.status)) return response;
    if (hop == options.max_redirects) {
      Fail(ErrorCode::kInvalidArgument, "{}: more than {} redirects", url.str(),
           options.max_redirects);
    }
    HttpUrl next = at.Resolve(response.header("location"));
    if (at.tls && !next.tls) {
      Fail(ErrorCode::kInvalidArgument, "{}: refusing a redirect from https to {}", url.str(),
           next.str());
    }
    // Credentials are for the server they were meant for (a registry
    // redirects blobs to storage that has its own signed URLs).
    if (!next.SameServer(at)) {
      std::erase_if(sent, [](const auto& h) { return Lowercase(h.first) == "authorization"; });
    }
    at = std::move(next);
  }
}

}  // namespace ephemera::oci

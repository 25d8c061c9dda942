// The HTTP(S) client a registry pull runs on: one GET at a time, TLS
// verified against the system's CA store or a configured CA file (with the
// host name checked), every step under a deadline so that a server that
// stops answering mid-body fails the pull instead of hanging it, bodies
// either kept (small: manifests, tokens, errors) or streamed to a sink
// (blobs), redirects followed with the credentials kept to the first host.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ephemera::oci {

struct HttpUrl {
  bool tls = true;
  std::string host;  // a name, an IPv4 address or a bracketed IPv6 address
  std::uint16_t port = 443;
  std::string target = "/";  // path and query

  // kInvalidArgument for anything but http(s)://HOST[:PORT][/TARGET].
  static HttpUrl Parse(std::string_view text);
  // A Location header: absolute, or a path on this URL's server.
  HttpUrl Resolve(std::string_view location) const;
  std::string authority() const;  // HOST[:PORT], the port only when not the scheme's
  std::string str() const;
  bool SameServer(const HttpUrl& other) const {
    return tls == other.tls && host == other.host && port == other.port;
  }
};

struct HttpOptions {
  std::filesystem::path ca_file;                      // empty: the system's CA store
  std::chrono::milliseconds connect_timeout{15'000};  // resolve, connect, TLS handshake each
  std::chrono::milliseconds stall_timeout{30'000};    // longest wait for the next bytes
  int max_redirects = 5;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  unsigned status = 0;
  // Names lowercased; a repeated header's values joined by ", " (RFC 9110).
  std::map<std::string, std::string> headers;
  std::string body;  // when no sink took it
  HttpUrl url;       // after redirects
  std::string header(const std::string& lowercase_name) const {
    auto it = headers.find(lowercase_name);
    return it == headers.end() ? "" : it->second;
  }
};

// Receives a 2xx body as it arrives; throws to abort the transfer.
using BodySink = std::function<void(const char* data, std::size_t size)>;

// One GET. A 2xx body goes to `sink` when there is one; any other body (and
// a 2xx one without a sink) is kept up to `max_kept_body` bytes (more is an
// error). kUnavailable naming the URL and the cause for a failed
// connection, handshake (certificate included) or a stall; kInvalidArgument
// for a redirect loop or a redirect from https to http.
HttpResponse HttpGet(const HttpUrl& url, const HttpHeaders& headers, const HttpOptions& options,
                     const BodySink& sink = {}, std::size_t max_kept_body = 4 << 20);

}  // namespace ephemera::oci

// Parsers for what users type: server URLs, durations, fingerprints.
// Each throws std::invalid_argument with a message fit for the user.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ephemera::client {

// An ephemerad API server: http://HOST[:PORT] or https://HOST[:PORT].
struct ServerUrl {
  bool tls = true;
  std::string host;  // lower case; an IPv6 address without brackets
  std::uint16_t port = 0;

  bool host_is_address() const;   // an IP literal (no SNI for those)
  std::string authority() const;  // host:port, [v6]:port
  std::string str() const;        // the canonical URL, the key in servers.json
};

// Accepts the scheme in any case, a host name, IPv4 or [IPv6] address, an
// optional port (default 443 / 80) and an optional trailing "/"; refuses
// user info, paths, queries and fragments.
ServerUrl ParseServerUrl(std::string_view url);

// Seconds in "3600", "90s", "90m", "12h" or "7d"; must be positive.
std::int64_t ParseDuration(std::string_view text);

// A SHA-256 fingerprint as 64 lower-case hex digits, from hex in either
// case, with or without colons, optionally prefixed "sha256:".
std::string NormalizeFingerprint(std::string_view text);

// Lower-case hex of bytes.
std::string Hex(const unsigned char* data, std::size_t size);

}  // namespace ephemera::client

#include "client/parse.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <stdexcept>

namespace ephemera::client {

namespace {

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsIpv4(const std::string& host) {
  in_addr address{};
  return ::inet_pton(AF_INET, host.c_str(), &address) == 1;
}

bool IsIpv6(const std::string& host) {
  in6_addr address{};
  return ::inet_pton(AF_INET6, host.c_str(), &address) == 1;
}

bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::size_t label = 0;
  char previous = '.';
  for (char c : host) {
    if (c == '.') {
      if (label == 0 || previous == '-') return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      if (c == '-' && label == 0) return false;
      if (++label > 63) return false;
    } else {
      return false;
    }
    previous = c;
  }
  return previous != '-';  // a trailing dot is allowed (a rooted name)
}

[[noreturn]] void BadUrl(std::string_view url, const std::string& why) {
  throw std::invalid_argument("'" + std::string(url.substr(0, 200)) + "' is not a server URL: " +
                              why + " (expected https://HOST:PORT or http://HOST:PORT)");
}

}  // namespace

bool ServerUrl::host_is_address() const { return IsIpv4(host) || IsIpv6(host); }

std::string ServerUrl::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string ServerUrl::str() const { return (tls ? "https://" : "http://") + authority(); }

ServerUrl ParseServerUrl(std::string_view url) {
  ServerUrl result;
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) BadUrl(url, "no scheme");
  std::string scheme = Lower(url.substr(0, scheme_end));
  if (scheme == "https") {
    result.tls = true;
  } else if (scheme == "http") {
    result.tls = false;
  } else {
    BadUrl(url, "the scheme must be https or http, not '" + scheme.substr(0, 20) + "'");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") BadUrl(url, "it must not have a path");
    rest = rest.substr(0, slash);
  }
  if (rest.find_first_of("?#") != std::string_view::npos)
    BadUrl(url, "it must not have a query or fragment");
  if (rest.find('@') != std::string_view::npos)
    BadUrl(url, "it must not carry user info (give the access token with --token)");
  std::string_view host = rest, port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) BadUrl(url, "unterminated [IPv6 address]");
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') BadUrl(url, "unexpected text after the [IPv6 address]");
      port = after.substr(1);
      if (port.empty()) BadUrl(url, "empty port");
    }
    if (!IsIpv6(std::string(host)))
      BadUrl(url, "'" + std::string(host) + "' is not an IPv6 address");
  } else {
    if (auto colon = rest.find(':'); colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) BadUrl(url, "empty port");
    }
    if (host.empty()) BadUrl(url, "no host");
    if (!IsHostName(host))
      BadUrl(url, "'" + std::string(host.substr(0, 100)) + "' is not a host name");
  }
  result.host = Lower(host);
  if (port.empty()) {
    result.port = result.tls ? 443 : 80;
  } else {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        }))
      BadUrl(url, "the port must be a number from 1 to 65535");
    int value = std::stoi(std::string(port));
    if (value < 1 || value > 65535) BadUrl(url, "the port must be a number from 1 to 65535");
    result.port = static_cast<std::uint16_t>(value);
  }
  return result;
}

std::int64_t ParseDuration(std::string_view text) {
  auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("'" + std::string(text.substr(0, 40)) +
                                 "' is not a duration: " + why +
                                 " (use seconds, or a number with s, m, h or d: 90m, 12h, 7d)");
  };
  std::string_view digits = text;
  std::int64_t unit = 1;
  if (!text.empty() && !std::isdigit(static_cast<unsigned char>(text.back()))) {
    switch (text.back()) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      default:
        throw bad("unknown unit");
    }
    digits.remove_suffix(1);
  }
  if (digits.empty()) throw bad("no number");
  std::int64_t value = 0;
  for (char c : digits) {
    if (!std::isdigit(static_cast<unsigned char>(c))) throw bad("not a whole number");
    if (value > (std::numeric_limits<std::int32_t>::max() - (c - '0')) / 10) throw bad("too long");
    value = value * 10 + (c - '0');
  }
  if (value == 0) throw bad("it must be positive");
  if (value > std::numeric_limits<std::int32_t>::max() / unit) throw bad("too long");
  return value * unit;
}

std::string NormalizeFingerprint(std::string_view text) {
  std::string_view rest = text;
  if (rest.size() > 7 && Lower(rest.substr(0, 7)) == "sha256:") rest.remove_prefix(7);
  std::string hex;
  bool ok = true;
  for (char c : rest) {
    if (c == ':') continue;
    ok = ok && std::isxdigit(static_cast<unsigned char>(c));
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (!ok || hex.size() != 64) {
    throw std::invalid_argument("'" + std::string(text.substr(0, 120)) +
                                "' is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
  }
  return hex;
}

std::string Hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 15]);
  }
  return out;
}

}  // namespace ephemera::client

// Remote servers this user has talked to, in $XDG_CONFIG_HOME/ephemera/
// servers.json (mode 0600): the SHA-256 of each https server's certificate,
// pinned on first contact (trust on first use), and the access token given
// with --token, so that later commands need neither.
//
//   {"version": 1,
//    "servers": {"https://host:8443": {"certificate_sha256": "<64 hex>",
//                                      "pinned_at": "2025-01-01T00:00:00Z",
//                                      "token": "<access token>"}}}
//
// A file that cannot be parsed is an error, never an empty store: that
// would silently trust whatever certificate comes next.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "client/private_file.h"

namespace ephemera::client {

struct ServerEntry {
  std::optional<std::string> certificate_sha256;  // 64 lower-case hex digits
  std::optional<std::string> pinned_at;           // ISO-8601 UTC
  std::optional<std::string> token;
};

class ServerStore {
 public:
  explicit ServerStore(std::filesystem::path file = ConfigDir() / "servers.json");

  // Keyed by ServerUrl::str().
  std::optional<ServerEntry> Get(const std::string& server) const;
  std::map<std::string, ServerEntry> All() const;

  // Pins `sha256` unless a certificate is pinned already; returns the pin in
  // force afterwards (another process may have pinned first).
  std::string PinIfUnpinned(const std::string& server, const std::string& sha256);
  void SetPin(const std::string& server, const std::string& sha256);
  void SetToken(const std::string& server, const std::string& token);
  bool Forget(const std::string& server);  // false when it was not known

  const std::filesystem::path& file() const { return file_; }

 private:
  std::map<std::string, ServerEntry> Load() const;
  void Save(const std::map<std::string, ServerEntry>& all) const;
  std::filesystem::path file_;
};

}  // namespace ephemera::client

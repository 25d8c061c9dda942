// libephemera-client's HTTP client for the daemon's /v1 API (the `ephemera`
// command's too): on the local unix socket,
// or on a remote server over http:// or https://. Over https the server's
// certificate must match the one pinned for it in servers.json (recorded on
// first contact) or the one demanded with --pin; the check happens during
// the TLS handshake, so nothing (not the bearer token) reaches a server that
// fails it.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/parse.h"
#include "client/private_file.h"
#include "ephemera/client_error.h"

namespace ephemera::client {

// A failed request: the server's message (or why it could not be reached).
using ApiError = Error;

// The server's certificate is not the pinned or demanded one; nothing was sent.
class CertificateRejected : public ApiError {
 public:
  explicit CertificateRejected(const std::string& message) : ApiError(0, message) {}
};

struct Timeouts {
  std::chrono::milliseconds connect{10'000};  // each of: resolve, connect, TLS handshake
  std::chrono::milliseconds write{30'000};
  std::chrono::milliseconds response{600'000};  // a create waits for a VM to boot
};

struct ClientOptions {
  std::filesystem::path socket = "/run/ephemera/ephemera.sock";  // when there is no server
  std::optional<ServerUrl> server;
  std::optional<std::string> token;  // sent to a server as "Authorization: Bearer"
  bool remember_token = false;       // kept in servers.json once a request with it succeeds
  std::optional<std::string> pin;    // demanded certificate SHA-256 (64 hex), no TOFU
  std::filesystem::path servers_file = ConfigDir() / "servers.json";
  Timeouts timeouts;
  std::size_t max_response_body = 16 * 1024 * 1024;
  // Messages for the user (a certificate pinned); stderr when unset.
  std::function<void(const std::string&)> notice;
};

using Headers = std::vector<std::pair<std::string, std::string>>;
// Each line of a streamed (application/x-ndjson) answer as it arrives.
using LineFn = std::function<void(std::string_view line)>;
// Each piece of a streamed byte answer (a file) as it arrives.
using DataFn = std::function<void(std::string_view bytes)>;

class ApiClient {
 public:
  explicit ApiClient(std::filesystem::path socket);
  explicit ApiClient(ClientOptions options);

  // Sends one request and returns the parsed JSON body of a 2xx answer;
  // throws ApiError otherwise (CertificateRejected for a pinning failure).
  // With `on_line`, asks for a streamed answer: each line goes to it as it
  // comes, and the last line is the answer.
  nlohmann::json Request(const std::string& method, const std::string& target,
                         const std::string& body = "", const Headers& headers = {},
                         const LineFn& on_line = {});

  // GET of bytes (a file, a tar): handed to `on_data` as they come, never
  // held whole. An error answer throws ApiError as Request's do.
  nlohmann::json Download(const std::string& target, const DataFn& on_data,
                          const Headers& headers = {});
  // A request whose body is `file`, read as it is sent; the JSON answer.
  nlohmann::json Upload(const std::string& method, const std::string& target,
                        const std::filesystem::path& file, const std::string& content_type,
                        const Headers& headers = {});

  // The server URL or the socket path, for messages.
  std::string where() const;
  const std::optional<ServerUrl>& server() const { return options_.server; }

 private:
  template <typename Message>
  void Prepare(Message& request, const Headers& headers);
  template <typename Message>
  nlohmann::json Perform(Message& request, const LineFn& on_line, const DataFn& on_data);
  void Notice(const std::string& message) const;
  void RememberToken();

  ClientOptions options_;
  bool warned_plain_token_ = false;
  bool token_remembered_ = false;
};

}  // namespace ephemera::client

// libephemera-client: ephemerad's /v1 API for C++ programs (and the
// transport the `ephemera` command is built on): the local unix socket, or a remote
// server over https:// (its certificate pinned on first contact, or given)
// or http://, with an access token.
//
//   ephemera::client::Client client;  // /run/ephemera/ephemera.sock
//   auto sandbox = client.Create({{"memory_mib", 256}});
//   auto run = client.Exec(sandbox.id, {"uname", "-r"});
//   client.Destroy(sandbox.id, sandbox.token);
//
// Every failure throws Error: its status() is the HTTP status (0 when the
// daemon could not be reached) and what() the daemon's message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ephemera/client_error.h"

namespace ephemera::client {

struct Options {
  std::filesystem::path socket = "/run/ephemera/ephemera.sock";  // without a server
  std::string server;  // "https://host:8443" or "http://host:port"; empty: the socket
  std::string token;   // the access token a server wants
  std::string pin;     // the server certificate's SHA-256, demanded (no first-contact trust)
};

// A sandbox as the daemon shows it; `record` has every field.
struct Sandbox {
  std::string id;
  std::string state;
  std::string host;  // where SSH is forwarded
  std::uint16_t port = 0;
  std::string username;
  std::string password;  // from Create only, once
  std::string token;     // the client token: from Create only, once; acts on the sandbox
  nlohmann::json record;
};

struct ExecOptions {
  std::map<std::string, std::string> env;
  std::string cwd;
  std::string user;  // default: the sandbox's client account
  std::optional<std::string> stdin_data;
  long long timeout_seconds = 0;  // 0: none
  std::string token;              // the sandbox's client token (remote callers need it)
  // Output as it comes; when unset it is collected in ExecResult.
  std::function<void(std::string_view)> on_stdout, on_stderr;
};

struct ExecResult {
  std::string out, err;  // what the callbacks did not take
  std::optional<int> exit_code;
  std::optional<int> signal;
  bool timed_out = false;
};

class Client {
 public:
  explicit Client(Options options = {});
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // POST /v1/sandboxes with `request` ({"image", "memory_mib", "ttl_seconds", ...}).
  Sandbox Create(const nlohmann::json& request = nlohmann::json::object());
  std::vector<Sandbox> List();
  Sandbox Show(const std::string& id);
  void Destroy(const std::string& id, const std::string& token = "");
  // Its time left, from now (none: the daemon's default TTL).
  Sandbox Extend(const std::string& id, std::optional<long long> ttl_seconds,
                 const std::string& token = "");
  ExecResult Exec(const std::string& id, const std::vector<std::string>& argv,
                  const ExecOptions& options = {});
  // A file in (mode as the local file's) or out (written whole or not at all).
  void Upload(const std::string& id, const std::filesystem::path& local,
              const std::string& guest_path, const std::string& token = "");
  void Download(const std::string& id, const std::string& guest_path,
                const std::filesystem::path& local, const std::string& token = "");

 private:
  class Transport;
  std::unique_ptr<Transport> transport_;
};

}  // namespace ephemera::client

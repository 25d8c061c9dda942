#include "cli/sandbox_access.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace ephemera::cli {

using nlohmann::json;

namespace {

bool AllOf(const std::string& s, const char* allowed_punctuation) {
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view(allowed_punctuation).find(c) != std::string_view::npos;
  });
}

std::string Text(const json& entry, const char* key) {
  auto it = entry.find(key);
  if (it == entry.end() || !it->is_string()) {
    throw std::invalid_argument(std::string("'") + key + "' is missing or not a string");
  }
  return it->get<std::string>();
}

[[noreturn]] void Bad(const char* key, const std::string& why) {
  throw std::invalid_argument(std::string("'") + key + "' " + why);
}

bool IsHost(const std::string& host) {
  // A DNS name or an IPv4 address, or an IPv6 address (hex and colons).
  if (host.empty() || host.size() > 253 || host.front() == '-' || host.front() == '.') return false;
  return AllOf(host, ".-") || (host.find(':') != std::string::npos && AllOf(host, ":."));
}

bool IsUsername(const std::string& user) {
  // POSIX-portable names as useradd takes them (Anweddol's are user_NNNNN).
  if (user.empty() || user.size() > 32) return false;
  if (!(std::islower(static_cast<unsigned char>(user[0])) || user[0] == '_')) return false;
  return std::all_of(user.begin(), user.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) ||
           std::isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

bool IsHostKey(const std::string& key) {
  auto space = key.find(' ');
  if (space == std::string::npos) return false;
  std::string type = key.substr(0, space), blob = key.substr(space + 1);
  static const char* kTypes[] = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                                 "ecdsa-sha2-nistp521", "ssh-rsa"};
  if (std::none_of(std::begin(kTypes), std::end(kTypes), [&](const char* t) { return type == t; }))
    return false;
  return !blob.empty() && blob.size() <= 8192 && AllOf(blob, "+/=");
}

}  // namespace

SandboxAccess ParseSandboxAccess(const json& entry) {
  if (!entry.is_object()) throw std::invalid_argument("not a JSON object");
  SandboxAccess a;
  a.host = Text(entry, "host");
  if (!IsHost(a.host)) Bad("host", "is not a host name or address");
  auto port = entry.find("port");
  if (port == entry.end() || !port->is_number_integer() || port->get<std::int64_t>() < 1 ||
      port->get<std::int64_t>() > 65535) {
    Bad("port", "is not a port number");
  }
  a.port = static_cast<std::uint16_t>(port->get<std::int64_t>());
  a.username = Text(entry, "username");
  if (!IsUsername(a.username)) Bad("username", "is not a plain user name");
  a.password = Text(entry, "password");
  if (a.password.empty() || a.password.size() > 1024 || !AllOf(a.password, "")) {
    Bad("password", "is not 1 to 1024 letters and digits");
  }
  a.host_key = Text(entry, "host_key");
  if (!IsHostKey(a.host_key)) Bad("host_key", "is not an SSH public key line");
  if (entry.contains("token") && !entry["token"].is_null()) {
    a.token = Text(entry, "token");
    if (a.token->empty() || a.token->size() > 1024 || !AllOf(*a.token, "_-")) {
      Bad("token", "is not a client token");
    }
  }
  if (entry.contains("server") && !entry["server"].is_null()) a.server = Text(entry, "server");
  return a;
}

json ToJson(const SandboxAccess& a) {
  json j = {{"host", a.host},
            {"port", a.port},
            {"username", a.username},
            {"password", a.password},
            {"host_key", a.host_key}};
  if (a.token) j["token"] = *a.token;
  if (a.server) j["server"] = *a.server;
  return j;
}

std::string KnownHostsLine(const SandboxAccess& a) {
  return "[" + a.host + "]:" + std::to_string(a.port) + " " + a.host_key + "\n";
}

std::vector<std::string> SshArgv(const SandboxAccess& a, const std::string& known_hosts,
                                 const std::vector<std::string>& command) {
  std::vector<std::string> args = {"ssh",
                                   "-p",
                                   std::to_string(a.port),
                                   "-l",
                                   a.username,
                                   "-o",
                                   "UserKnownHostsFile=" + known_hosts,
                                   "-o",
                                   "StrictHostKeyChecking=yes",
                                   "-o",
                                   "PubkeyAuthentication=no",
                                   "-o",
                                   "PreferredAuthentications=password,keyboard-interactive",
                                   "-o",
                                   "NumberOfPasswordPrompts=1",
                                   "-o",
                                   "LogLevel=ERROR",
                                   "--",
                                   a.host};
  args.insert(args.end(), command.begin(), command.end());
  return args;
}

int RunSsh(const SandboxAccess& access, const std::vector<std::string>& command,
           const std::string& program, const char* askpass_variable,
           const std::string& askpass_value) {
  std::string dir_template = "/tmp/" + program + "-ssh-XXXXXX";
  if (!::mkdtemp(dir_template.data())) {
    throw std::runtime_error(std::string("cannot create a folder for known_hosts: ") +
                             std::strerror(errno));
  }
  const std::string dir = dir_template;
  {
    // Pin the host key the daemon saw while provisioning.
    std::ofstream known(dir + "/known_hosts");
    known << KnownHostsLine(access);
  }
  char self[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::vector<std::string> args = SshArgv(access, dir + "/known_hosts", command);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("SSH_ASKPASS", n > 0 ? self : program.c_str(), 1);
    ::setenv("SSH_ASKPASS_REQUIRE", "force", 1);
    ::setenv(askpass_variable, askpass_value.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp("ssh", argv.data());
    std::perror((program + ": cannot run ssh").c_str());
    ::_exit(127);
  }
  const int fork_error = errno;
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (pid < 0)
    throw std::runtime_error(std::string("cannot start ssh: ") + std::strerror(fork_error));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace ephemera::cli

// ephemera: the command-line client of ephemerad's /v1 API.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "cli/api_client.h"
#include "cli/remembered.h"

namespace {

using ephemera::cli::ApiClient;
using ephemera::cli::ApiError;
using ephemera::cli::Remembered;
using nlohmann::json;

constexpr char kDefaultSocket[] = "/run/ephemera/ephemera.sock";
constexpr char kAskpassVariable[] = "EPHEMERA_ASKPASS_ID";

std::string Field(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

void PrintTable(const json& sandboxes) {
  std::printf("%-36s  %-12s  %-8s  %-22s  %-10s  %s\n", "ID", "STATE", "IMAGE", "SSH", "USER",
              "EXPIRES");
  for (const auto& s : sandboxes) {
    std::string ssh = Field(s, "host") + ":" + Field(s, "port");
    std::printf("%-36s  %-12s  %-8s  %-22s  %-10s  %s\n", Field(s, "id").c_str(),
                Field(s, "state").c_str(), Field(s, "image").c_str(), ssh.c_str(),
                Field(s, "username").c_str(), Field(s, "expires_at").c_str());
  }
}

void PrintDetails(const json& s) {
  for (const char* key : {"id", "state", "image", "image_sha256", "memory_mib", "vcpus", "host",
                          "port", "username", "password", "token", "guest_ip",
                          "host_key_fingerprint", "created_at", "expires_at", "reason"}) {
    if (s.contains(key))
      std::printf("%-22s %s\n", (std::string(key) + ":").c_str(), Field(s, key).c_str());
  }
}

// As SSH_ASKPASS: prints the remembered password of the sandbox named in
// the environment, so the password never appears in argv or a file of ours
// other than the 0600 store.
int Askpass(const char* id) {
  auto entry = Remembered().Get(id);
  if (!entry) return 1;
  std::printf("%s\n", (*entry)["password"].get<std::string>().c_str());
  return 0;
}

int Ssh(const std::string& id, const std::vector<std::string>& command) {
  auto entry = Remembered().Get(id);
  if (!entry) {
    std::fprintf(
        stderr,
        "ephemera: no credentials remembered for %s (only the client that created it has them)\n",
        id.c_str());
    return 1;
  }
  char dir_template[] = "/tmp/ephemera-ssh-XXXXXX";
  if (!::mkdtemp(dir_template)) {
    std::perror("ephemera: mkdtemp");
    return 1;
  }
  std::string dir = dir_template;
  std::string host = (*entry)["host"], port = std::to_string((*entry)["port"].get<int>());
  {
    // Pin the host key the daemon saw while provisioning.
    std::ofstream known(dir + "/known_hosts");
    known << "[" << host << "]:" << port << " " << (*entry)["host_key"].get<std::string>() << "\n";
  }
  char self[4096] = {};
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::vector<std::string> args = {"ssh",
                                   "-p",
                                   port,
                                   "-o",
                                   "UserKnownHostsFile=" + dir + "/known_hosts",
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
                                   (*entry)["username"].get<std::string>() + "@" + host};
  if (!command.empty()) args.push_back("--");
  args.insert(args.end(), command.begin(), command.end());
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("SSH_ASKPASS", n > 0 ? self : "ephemera", 1);
    ::setenv("SSH_ASKPASS_REQUIRE", "force", 1);
    ::setenv(kAskpassVariable, id.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp("ssh", argv.data());
    std::perror("ephemera: cannot run ssh");
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::filesystem::remove_all(dir);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* id = std::getenv(kAskpassVariable)) return Askpass(id);

  CLI::App app{"ephemera: create, inspect and destroy disposable Linux machines"};
  app.set_version_flag("--version", "ephemera 0.1.0");
  std::string socket = kDefaultSocket;
  bool as_json = false;
  app.add_option("--socket", socket, "ephemerad's local API socket")->capture_default_str();
  app.add_flag("--json", as_json, "print JSON for scripts");
  app.require_subcommand(1);
  app.fallthrough();  // --json and --socket also after the subcommand

  auto* create = app.add_subcommand("create", "create a sandbox and print its SSH credentials");
  std::optional<std::string> image;
  std::optional<unsigned> memory, vcpus;
  std::optional<long long> ttl;
  create->add_option("--image", image, "image name");
  create->add_option("--memory", memory, "guest memory in MiB");
  create->add_option("--vcpus", vcpus, "virtual CPUs");
  create->add_option("--ttl", ttl, "seconds until it is destroyed");
  auto* list = app.add_subcommand("list", "list sandboxes");
  std::string id;
  auto* show = app.add_subcommand("show", "show one sandbox");
  show->add_option("id", id, "sandbox id")->required();
  auto* destroy = app.add_subcommand("destroy", "destroy a sandbox");
  destroy->add_option("id", id, "sandbox id")->required();
  auto* status = app.add_subcommand("status", "show the daemon's status");
  auto* ssh = app.add_subcommand("ssh", "log in to a sandbox you created (ssh ID [-- COMMAND...])");
  std::vector<std::string> command;
  ssh->add_option("id", id, "sandbox id")->required();
  ssh->add_option("command", command, "command to run instead of a shell");
  ssh->allow_extras(false);
  CLI11_PARSE(app, argc, argv);

  ApiClient client(socket);
  try {
    if (create->parsed()) {
      json body = json::object();
      if (image) body["image"] = *image;
      if (memory) body["memory_mib"] = *memory;
      if (vcpus) body["vcpus"] = *vcpus;
      if (ttl) body["ttl_seconds"] = *ttl;
      json s = client.Request("POST", "/v1/sandboxes", body.dump());
      Remembered().Put(s["id"], {{"host", s["host"]},
                                 {"port", s["port"]},
                                 {"username", s["username"]},
                                 {"password", s["password"]},
                                 {"token", s["token"]},
                                 {"host_key", s["host_key"]}});
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else {
        PrintDetails(s);
      }
    } else if (list->parsed()) {
      json r = client.Request("GET", "/v1/sandboxes");
      if (as_json) {
        std::cout << r["sandboxes"].dump(2) << "\n";
      } else {
        PrintTable(r["sandboxes"]);
      }
    } else if (show->parsed()) {
      json s = client.Request("GET", "/v1/sandboxes/" + id);
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else {
        PrintDetails(s);
      }
    } else if (destroy->parsed()) {
      json r = client.Request("DELETE", "/v1/sandboxes/" + id);
      Remembered().Forget(id);
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        std::printf("destroyed %s\n", id.c_str());
      }
    } else if (status->parsed()) {
      json r = client.Request("GET", "/v1/status");
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        for (auto& [k, v] : r.items())
          std::printf("%-16s %s\n", (k + ":").c_str(), Field(r, k.c_str()).c_str());
      }
    } else if (ssh->parsed()) {
      return Ssh(id, command);
    }
  } catch (const ApiError& e) {
    std::fprintf(stderr, "ephemera: %s\n", e.what());
    return e.status() == 0 ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ephemera: %s\n", e.what());
    return 1;
  }
  return 0;
}

// ephemera: the command-line client of ephemerad's /v1 API.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/guest_commands.h"
#include "cli/inventory.h"
#include "cli/observe_commands.h"
#include "cli/progress.h"
#include "cli/remembered.h"
#include "cli/sandbox_access.h"
#include "cli/transport.h"

namespace {

using ephemera::cli::ApiClient;
using ephemera::cli::ApiError;
using ephemera::cli::BuildInventory;
using ephemera::cli::ClientOptions;
using ephemera::cli::CopyFromGuest;
using ephemera::cli::CopyToGuest;
using ephemera::cli::ExecOptions;
using ephemera::cli::Headers;
using ephemera::cli::KnownHostsLine;
using ephemera::cli::NormalizeFingerprint;
using ephemera::cli::ParseDuration;
using ephemera::cli::ParseSandboxAccess;
using ephemera::cli::ParseServerUrl;
using ephemera::cli::PathSegment;
using ephemera::cli::Remembered;
using ephemera::cli::RunExec;
using ephemera::cli::SandboxAccess;
using ephemera::cli::ServerStore;
using ephemera::cli::SplitGuestPath;
using ephemera::cli::SshArgv;
using ephemera::cli::ToJson;
using nlohmann::json;

constexpr char kDefaultSocket[] = "/run/ephemera/ephemera.sock";
constexpr char kAskpassVariable[] = "EPHEMERA_ASKPASS_ID";

std::string Field(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

std::optional<std::string> Env(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

// Left-aligned columns two spaces apart; the first row is the header.
void PrintColumns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

// The remembered client token of a sandbox this user created, as a header.
Headers TokenHeader(const std::optional<json>& entry) {
  Headers headers;
  if (entry && entry->contains("token") && (*entry)["token"].is_string())
    headers.emplace_back("X-Ephemera-Token", (*entry)["token"].get<std::string>());
  return headers;
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

void PrintFields(const json& j, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    if (j.contains(key))
      std::printf("%-22s %s\n", (std::string(key) + ":").c_str(), Field(j, key).c_str());
  }
}

void PrintDetails(const json& s) {
  PrintFields(s, {"id",
                  "state",
                  "running",
                  "kind",
                  "driver",
                  "image",
                  "image_sha256",
                  "iso_path",
                  "memory_mib",
                  "vcpus",
                  "host",
                  "port",
                  "username",
                  "password",
                  "token",
                  "guest_ip",
                  "mac",
                  "network",
                  "host_key_fingerprint",
                  "run_id",
                  "name",
                  "tap",
                  "subnet",
                  "created_at",
                  "paused_at",
                  "ttl_left_seconds",
                  "idle_timeout_seconds",
                  "expires_at",
                  "reason"});
  // "allow example.test 10.1.0.0/16": the mode, then what it allows.
  if (auto egress = s.find("egress"); egress != s.end() && egress->is_object()) {
    std::string text = Field(*egress, "mode");
    if (auto allow = egress->find("allow"); allow != egress->end() && allow->is_array()) {
      for (const json& entry : *allow)
        text += " " + (entry.is_string() ? entry.get<std::string>() : entry.dump());
    }
    std::printf("%-22s %s\n", "egress:", text.c_str());
  }
}

// The list r[key] under `title`, a row per object, a column per field
// ("a/b": two fields shown as one).
void PrintList(const json& r, const char* key, const char* title,
               const std::vector<std::string>& columns) {
  auto list = r.find(key);
  if (list == r.end() || !list->is_array() || list->empty()) return;
  std::printf("%s:\n", title);
  std::vector<std::vector<std::string>> rows = {columns};
  rows[0][0] = "  " + rows[0][0];
  for (const auto& item : *list) {
    if (!item.is_object()) continue;
    std::vector<std::string> row;
    for (const std::string& column : columns) {
      const auto slash = column.find('/');
      row.push_back(slash == std::string::npos
                        ? Field(item, column.c_str())
                        : Field(item, column.substr(0, slash).c_str()) + "/" +
                              Field(item, column.substr(slash + 1).c_str()));
    }
    row[0] = "  " + row[0];
    rows.push_back(std::move(row));
  }
  PrintColumns(rows);
}

void PrintStatus(const json& r) {
  for (auto& [k, v] : r.items()) {
    if (k != "front_doors" && k != "pools" && k != "snapshots")
      std::printf("%-16s %s\n", (k + ":").c_str(), Field(r, k.c_str()).c_str());
  }
  PrintList(r, "pools", "warm pools",
            {"image", "memory_mib", "vcpus", "ready/size", "hits", "misses"});
  PrintList(r, "snapshots", "snapshots",
            {"image", "memory_mib", "vcpus", "state", "restores", "fallbacks"});
  auto doors = r.find("front_doors");
  if (doors == r.end() || !doors->is_object() || doors->empty()) return;
  std::printf("front doors:\n");
  std::vector<std::vector<std::string>> rows;
  for (auto& [name, door] : doors->items()) {
    if (!door.is_object()) continue;
    std::vector<std::string> row = {"  " + name, Field(door, "listen")};
    std::string details;
    if (auto tls = door.find("tls"); tls != door.end() && tls->is_boolean())
      details = *tls ? "tls" : "no tls";
    if (door.contains("certificate_sha256"))
      details += (details.empty() ? "" : ", ") + std::string("certificate sha256 ") +
                 Field(door, "certificate_sha256");
    if (door.contains("rsa_key_sha256"))
      details += (details.empty() ? "" : ", ") + std::string("rsa key sha256 ") +
                 Field(door, "rsa_key_sha256");
    row.push_back(details);
    rows.push_back(row);
  }
  PrintColumns(rows);
}

void PrintTokens(const json& tokens) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "ENABLED", "CREATED", "EXPIRES", "LAST USED", "MAX", "RATE/MIN"}};
  for (const auto& t : tokens) {
    rows.push_back({Field(t, "id"), Field(t, "name"), Field(t, "enabled"), Field(t, "created_at"),
                    Field(t, "expires_at"), Field(t, "last_used_at"), Field(t, "max_sandboxes"),
                    Field(t, "rate_per_minute")});
  }
  PrintColumns(rows);
}

void PrintImages(const json& images) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "FORMAT", "VERSION", "LAYOUT", "ENDPOINT", "SHA256"}};
  for (const auto& i : images) {
    if (i.value("valid", false)) {
      rows.push_back({Field(i, "name"), Field(i, "format"), Field(i, "version"), Field(i, "layout"),
                      Field(i, "endpoint"), Field(i, "sha256")});
    } else {
      rows.push_back({Field(i, "name"), "-", "-", "-", "-", "unusable: " + Field(i, "error")});
    }
  }
  PrintColumns(rows);
}

void PrintImageDetails(const json& i) {
  PrintFields(i, {"name", "valid", "error", "format", "layout", "version", "endpoint", "sha256",
                  "dir", "cmdline", "disk_bytes"});
  if (auto source = i.find("source"); source != i.end() && source->is_object()) {
    std::printf("source:\n");
    for (const char* key : {"kernel", "kernel_digest", "rootfs", "rootfs_digest", "guest_contract",
                            "registry_blobs", "imported_at"}) {
      std::printf("  %-20s %s\n", (std::string(key) + ":").c_str(), Field(*source, key).c_str());
    }
  }
  std::vector<std::vector<std::string>> rows = {{"  FILE", "SIZE", "SHA256", "PATH"}};
  for (const auto& f : i.value("files", json::array())) {
    rows.push_back(
        {"  " + Field(f, "role"), Field(f, "size"), Field(f, "sha256"), Field(f, "path")});
  }
  if (rows.size() > 1) PrintColumns(rows);
  std::string users;
  for (const auto& id : i.value("used_by", json::array())) {
    users += (users.empty() ? "" : " ") + (id.is_string() ? id.get<std::string>() : id.dump());
  }
  std::printf("%-22s %s\n", "used by:", users.empty() ? "-" : users.c_str());
}

// Paths are the daemon's: relative oci:/docker-archive: paths are made
// absolute here, where the user meant them.
std::string AbsoluteReference(const std::string& ref) {
  for (std::string_view prefix : {"oci:", "docker-archive:"}) {
    if (ref.starts_with(prefix) && ref.size() > prefix.size() && ref[prefix.size()] != '/') {
      return std::string(prefix) +
             (std::filesystem::current_path() / ref.substr(prefix.size())).string();
    }
  }
  return ref;
}

// The global options that say where requests go.
struct Target {
  std::string socket = kDefaultSocket;
  std::string remote, token, pin;
  CLI::Option *socket_option = nullptr, *remote_option = nullptr, *token_option = nullptr,
              *pin_option = nullptr;

  // `remembered`: the server a remembered sandbox came from ("" for the local
  // socket). --remote or --socket overrides it; it overrides EPHEMERA_REMOTE.
  ApiClient Client(const std::optional<std::string>& remembered = std::nullopt) const {
    ClientOptions options;
    options.socket = socket;
    std::optional<std::string> url;
    std::string source;          // where the URL came from, for errors
    bool chosen_remote = false;  // by --remote or EPHEMERA_REMOTE rather than a remembered one
    if (remote_option->count()) {
      url = remote;
      chosen_remote = true;
    } else if (socket_option->count()) {
    } else if (remembered) {
      if (!remembered->empty()) url = *remembered;
      source = "the remembered server: ";
    } else if (auto env = Env("EPHEMERA_REMOTE")) {
      url = env;
      source = "EPHEMERA_REMOTE: ";
      chosen_remote = true;
    }
    if (!url) {
      if (pin_option->count()) throw std::invalid_argument("--pin needs an https:// --remote");
      return ApiClient(options);
    }
    try {
      options.server = ParseServerUrl(*url);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(source + e.what());
    }
    if (token_option->count()) {
      options.token = token;
      options.remember_token = true;
    } else if (auto env = Env("EPHEMERA_TOKEN"); env && chosen_remote) {
      options.token = env;
    } else if (auto known = ServerStore().Get(options.server->str()); known && known->token) {
      options.token = known->token;
    }
    if (pin_option->count()) {
      if (!options.server->tls) throw std::invalid_argument("--pin needs an https:// server");
      options.pin = NormalizeFingerprint(pin);
    }
    return ApiClient(options);
  }
};

// A CLI11 validator from one of our parsers.
template <typename Parse>
CLI::Validator Valid(Parse parse, const char* name) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        try {
          parse(text);
          return "";
        } catch (const std::invalid_argument& e) {
          return e.what();
        }
      },
      "", name);
}

// As SSH_ASKPASS: prints the remembered password of the sandbox named in
// the environment, so the password never appears in argv or a file of ours
// other than the 0600 store.
int Askpass(const char* id) {
  auto entry = Remembered().Get(id);
  if (!entry) return 1;
  try {
    std::printf("%s\n", ParseSandboxAccess(*entry).password.c_str());
  } catch (const std::invalid_argument&) {
    return 1;
  }
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
  SandboxAccess access;
  try {
    access = ParseSandboxAccess(*entry);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "ephemera: the remembered credentials of %s are unusable: %s\n",
                 id.c_str(), e.what());
    return 1;
  }
  return ephemera::cli::RunSsh(access, command, "ephemera", kAskpassVariable, id);
}

// The server a remembered sandbox came from: "" for the local socket,
// nullopt when it is not remembered.
std::optional<std::string> RememberedServer(const std::optional<json>& entry) {
  if (!entry) return std::nullopt;
  auto it = entry->find("server");
  return it != entry->end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* id = std::getenv(kAskpassVariable)) return Askpass(id);

  CLI::App app{"ephemera: create, inspect and destroy disposable Linux machines"};
  app.set_version_flag("--version", "ephemera 0.1.0");
  Target target;
  bool as_json = false;
  target.socket_option = app.add_option("--socket", target.socket, "ephemerad's local API socket")
                             ->capture_default_str();
  target.remote_option = app.add_option("--remote", target.remote,
                                        "a remote ephemerad: https://HOST:PORT or http://HOST:PORT "
                                        "(default: $EPHEMERA_REMOTE, else the local socket)")
                             ->type_name("URL")
                             ->check(Valid(ParseServerUrl, "URL"));
  target.token_option =
      app.add_option("--token", target.token,
                     "access token for the remote server (default: $EPHEMERA_TOKEN, else the one "
                     "remembered "
                     "for that server); remembered once a request with it succeeds")
          ->type_name("TOKEN");
  target.pin_option = app.add_option("--pin", target.pin,
                                     "demand this SHA-256 fingerprint of the server's TLS "
                                     "certificate instead of trusting it on first use")
                          ->type_name("SHA256")
                          ->check(Valid(NormalizeFingerprint, "SHA256"));
  app.add_flag("--json", as_json, "print JSON for scripts");
  app.require_subcommand(1);
  app.fallthrough();  // the global options also after the subcommand

  auto* create = app.add_subcommand("create", "create a sandbox and print its SSH credentials");
  std::optional<std::string> kind, image, create_kernel, create_rootfs, run_id, machine;
  std::optional<unsigned> memory, vcpus;
  std::optional<long long> ttl;
  constexpr const char* kRefHelp =
      "oci:DIR[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG|@DIGEST]";
  create->add_option("--kind", kind, "vm (the default) or container")
      ->check(CLI::IsMember({"vm", "container"}));
  auto* image_opt = create->add_option("--image", image, "image name");
  auto* create_kernel_opt = create->add_option(
      "--kernel", create_kernel, std::string("kernel image, pulled on first use: ") + kRefHelp);
  auto* create_rootfs_opt = create->add_option(
      "--rootfs", create_rootfs,
      "rootfs image, pulled on first use (alone: it boots the kernel in its /boot)");
  create_kernel_opt->needs(create_rootfs_opt)->excludes(image_opt);
  create_rootfs_opt->excludes(image_opt);
  auto* run_opt = create->add_option("--run-id", run_id,
                                     "a pipeline's run: the /30 and TAP derive from it and --name");
  auto* name_opt = create->add_option("--name", machine, "the machine's name within the run");
  run_opt->needs(name_opt);
  name_opt->needs(run_opt);
  create->add_option("--memory", memory, "guest memory in MiB");
  create->add_option("--vcpus", vcpus, "virtual CPUs");
  create->add_option("--ttl", ttl, "seconds until it is destroyed");
  std::optional<long long> idle_timeout;
  create->add_option("--idle-timeout", idle_timeout,
                     "seconds without activity (exec, connection, traffic) until it is destroyed");
  std::optional<std::string> egress;
  std::vector<std::string> egress_allow;
  create
      ->add_option("--egress", egress,
                   "where it may connect: none, all, or allow (what --allow lists); default: all "
                   "where the host has outbound NAT, else none")
      ->check(CLI::IsMember({"none", "all", "allow"}));
  create->add_option("--allow", egress_allow,
                     "with --egress allow (implied): an address, CIDR or domain name (and the "
                     "names under it) it may reach; repeatable");
  auto* list = app.add_subcommand("list", "list sandboxes");
  bool inventory = false;
  std::optional<std::string> list_run;
  list->add_flag("--inventory", inventory,
                 "print the ready ones as an Ansible inventory (JSON), their host keys pinned");
  list->add_option("--run-id", list_run, "only this run's machines");
  std::string id;
  auto* show = app.add_subcommand("show", "show one sandbox");
  show->add_option("id", id, "sandbox id")->required();
  auto* destroy = app.add_subcommand("destroy", "destroy a sandbox");
  destroy->add_option("id", id, "sandbox id")->required();
  auto* pause = app.add_subcommand(
      "pause", "save a sandbox's state to disk and stop it (its memory freed, its TTL stopped)");
  pause->add_option("id", id, "sandbox id")->required();
  auto* extend = app.add_subcommand(
      "extend", "set the time a sandbox has left (longer or shorter; paused: from its resume)");
  extend->add_option("id", id, "sandbox id")->required();
  std::optional<long long> extend_ttl;
  extend->add_option("--ttl", extend_ttl, "seconds from now (default: the daemon's default TTL)")
      ->check(CLI::PositiveNumber);
  auto* exec = app.add_subcommand(
      "exec",
      "run a program in a sandbox (exec ID [OPTIONS] -- COMMAND...); exits with its status");
  exec->add_option("id", id, "sandbox id")->required();
  ExecOptions exec_options;
  exec->add_flag("-t,--tty", exec_options.tty, "a terminal in the guest (implies -i)");
  exec->add_flag("-i,--interactive", exec_options.interactive, "feed this stdin to the program");
  exec->add_option("-e,--env", exec_options.env, "NAME=value in its environment (repeatable)");
  exec->add_option("-w,--workdir", exec_options.cwd, "its working directory (default: home)");
  exec->add_option("-u,--user", exec_options.user, "the guest account (default: the client's)");
  exec->add_option("--timeout", exec_options.timeout_seconds,
                   "seconds until it is killed with its children (exit status 124)")
      ->check(CLI::PositiveNumber);
  exec->add_option("command", exec_options.argv, "the program and its arguments")->required();
  auto* cp = app.add_subcommand("cp", "copy a file to or from a sandbox (cp SRC DST, one ID:PATH)");
  std::string cp_from, cp_to;
  bool cp_tar = false;
  cp->add_option("from", cp_from, "a local file, or ID:PATH (a folder comes as tar; - for stdout)")
      ->required();
  cp->add_option("to", cp_to, "ID:PATH, or a local file")->required();
  cp->add_flag("--tar", cp_tar, "the local file is a tar to unpack into the guest folder");
  auto* port = app.add_subcommand("port", "guest ports forwarded on host ports");
  port->require_subcommand(1);
  long long guest_port = 0;
  auto* port_add =
      port->add_subcommand("add", "expose a guest port on a free host port (until removed)");
  port_add->add_option("id", id, "sandbox id")->required();
  port_add->add_option("guest_port", guest_port, "the guest's port")
      ->required()
      ->check(CLI::Range(1, 65535));
  auto* port_list = port->add_subcommand("list", "list a sandbox's forwarded ports, SSH's first");
  port_list->add_option("id", id, "sandbox id")->required();
  auto* port_rm = port->add_subcommand("rm", "close an exposed port");
  port_rm->add_option("id", id, "sandbox id")->required();
  port_rm->add_option("guest_port", guest_port, "the guest's port")
      ->required()
      ->check(CLI::Range(1, 65535));
  auto* resume = app.add_subcommand("resume", "restore a paused sandbox where it stopped");
  resume->add_option("id", id, "sandbox id")->required();
  auto* status = app.add_subcommand("status", "show the daemon's status");
  auto* ssh = app.add_subcommand("ssh", "log in to a sandbox you created (ssh ID [-- COMMAND...])");
  std::vector<std::string> command;
  ssh->add_option("id", id, "sandbox id")->required();
  ssh->add_option("command", command, "command to run instead of a shell");
  ssh->allow_extras(false);

  auto* image_cmd = app.add_subcommand("image", "the images sandboxes boot from");
  image_cmd->require_subcommand(1);
  auto* image_list = image_cmd->add_subcommand("list", "list images, their versions and digests");
  std::string rm_name;
  auto* image_rm = image_cmd->add_subcommand("rm", "remove an image no sandbox boots from");
  image_rm->add_option("name", rm_name, "image name")->required();
  std::string inspect_name;
  auto* image_inspect =
      image_cmd->add_subcommand("inspect", "show an image's files, sources and users");
  image_inspect->add_option("name", inspect_name, "image name")->required();
  auto* image_prune =
      image_cmd->add_subcommand("prune", "remove image folders no name points at and none uses");
  auto* image_pull = image_cmd->add_subcommand(
      "pull",
      "import a kernel image and a rootfs image (OCI) as one image (local socket); --rootfs "
      "alone: a rootfs that boots the kernel in its /boot; neither: the references configured "
      "for NAME under images:");
  std::string pull_name, pull_kernel, pull_rootfs;
  std::optional<long long> pull_headroom;
  image_pull->add_option("name", pull_name, "the image's name in the catalog")->required();
  auto* kernel_opt = image_pull->add_option("--kernel", pull_kernel, kRefHelp);
  auto* rootfs_opt = image_pull->add_option("--rootfs", pull_rootfs, kRefHelp);
  kernel_opt->needs(rootfs_opt);
  image_pull->add_option("--headroom", pull_headroom, "MiB free in the root disk (default 1024)")
      ->check(CLI::NonNegativeNumber);

  auto* token = app.add_subcommand("token", "manage access tokens for remote clients");
  token->require_subcommand(1);
  auto* token_add = token->add_subcommand("add", "create an access token and print it (once)");
  std::optional<std::string> token_name, expires_in;
  std::optional<long long> max_sandboxes, rate;
  token_add->add_option("--name", token_name, "a name to recognise it by");
  token_add->add_option("--expires-in", expires_in, "lifetime: seconds, or 90m, 12h, 7d")
      ->type_name("DURATION")
      ->check(Valid(ParseDuration, "DURATION"));
  token_add->add_option("--max-sandboxes", max_sandboxes, "sandboxes it may hold at once")
      ->check(CLI::NonNegativeNumber);
  token_add->add_option("--rate", rate, "requests it may make per minute")
      ->check(CLI::NonNegativeNumber);
  auto* token_list = token->add_subcommand("list", "list access tokens");
  std::string token_id;
  auto* token_enable = token->add_subcommand("enable", "enable an access token");
  token_enable->add_option("id", token_id, "token id")->required();
  auto* token_disable = token->add_subcommand("disable", "disable an access token");
  token_disable->add_option("id", token_id, "token id")->required();
  auto* token_delete = token->add_subcommand("delete", "delete an access token");
  token_delete->add_option("id", token_id, "token id")->required();

  auto* server = app.add_subcommand("server", "remote servers whose certificates are pinned");
  server->require_subcommand(1);
  auto* server_list = server->add_subcommand("list", "list pinned servers");
  std::string server_url;
  auto* server_forget =
      server->add_subcommand("forget", "forget a server's pinned certificate and remembered token");
  server_forget->add_option("url", server_url, "https://HOST:PORT")
      ->required()
      ->type_name("URL")
      ->check(Valid(ParseServerUrl, "URL"));

  ephemera::cli::EventsOptions events_options;
  auto* events = app.add_subcommand(
      "events", "print the daemon's event log (--follow: then new events as they happen)");
  events->add_flag("-f,--follow", events_options.follow, "keep printing new events");
  events->add_option("--since", events_options.since, "start after this sequence number")
      ->type_name("SEQ")
      ->check(CLI::NonNegativeNumber);
  double top_interval = 2;
  bool top_once = false;
  auto* top = app.add_subcommand(
      "top", "a live view of sandboxes: CPU, memory, network bytes, age, time left");
  top->add_option("--interval", top_interval, "seconds between frames")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  top->add_flag("--once", top_once, "print one frame and exit");
  CLI11_PARSE(app, argc, argv);

  try {
    if (create->parsed()) {
      ApiClient client = target.Client();
      json body = json::object();
      if (kind) body["kind"] = *kind;
      if (image) body["image"] = *image;
      if (create_kernel) body["kernel"] = AbsoluteReference(*create_kernel);
      if (create_rootfs) body["rootfs"] = AbsoluteReference(*create_rootfs);
      if (run_id) body["run_id"] = *run_id;
      if (machine) body["name"] = *machine;
      if (memory) body["memory_mib"] = *memory;
      if (vcpus) body["vcpus"] = *vcpus;
      if (ttl) body["ttl_seconds"] = *ttl;
      if (idle_timeout) body["idle_timeout_seconds"] = *idle_timeout;
      if (egress || !egress_allow.empty()) {
        body["egress"] = {{"mode", egress.value_or("allow")}, {"allow", egress_allow}};
      }
      json s = client.Request("POST", "/v1/sandboxes", body.dump());
      // Checked before anything is kept: these strings reach ssh later.
      SandboxAccess access;
      try {
        access = ParseSandboxAccess(s);
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error(std::string("the server's answer breaks the API contract: ") +
                                 e.what());
      }
      if (!s.contains("id") || !s["id"].is_string() || s["id"].get<std::string>().size() > 64) {
        throw std::runtime_error("the server's answer has no sandbox id");
      }
      if (client.server()) access.server = client.server()->str();
      Remembered().Put(s["id"], ToJson(access));
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else {
        PrintDetails(s);
      }
    } else if (list->parsed()) {
      json r = target.Client().Request("GET", "/v1/sandboxes");
      if (list_run && r["sandboxes"].is_array()) {
        json kept = json::array();
        for (const auto& s : r["sandboxes"]) {
          if (s.value("run_id", std::string()) == *list_run) kept.push_back(s);
        }
        r["sandboxes"] = kept;
      }
      if (inventory) {
        Remembered remembered;
        auto known_hosts = remembered.file().parent_path() / "inventory_known_hosts";
        auto built = BuildInventory(r["sandboxes"], remembered.All(), list_run, known_hosts);
        ephemera::cli::WritePrivateFile(known_hosts, built.known_hosts);
        for (const auto& why : built.skipped) {
          std::fprintf(stderr, "ephemera: left out of the inventory: %s\n", why.c_str());
        }
        std::cout << built.inventory.dump(2) << "\n";
      } else if (as_json) {
        std::cout << r["sandboxes"].dump(2) << "\n";
      } else {
        PrintTable(r["sandboxes"]);
      }
    } else if (show->parsed()) {
      ApiClient client = target.Client(RememberedServer(Remembered().Get(id)));
      json s = client.Request("GET", "/v1/sandboxes/" + PathSegment(id));
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else {
        PrintDetails(s);
      }
    } else if (pause->parsed() || resume->parsed()) {
      auto entry = Remembered().Get(id);
      ApiClient client = target.Client(RememberedServer(entry));
      const char* action = pause->parsed() ? "pause" : "resume";
      json s = client.Request("POST", "/v1/sandboxes/" + PathSegment(id) + "/" + action, "",
                              TokenHeader(entry));
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else {
        std::printf("%s %s\n", pause->parsed() ? "paused" : "resumed", id.c_str());
      }
    } else if (port_add->parsed() || port_list->parsed() || port_rm->parsed()) {
      auto entry = Remembered().Get(id);
      ApiClient client = target.Client(RememberedServer(entry));
      const std::string ports = "/v1/sandboxes/" + PathSegment(id) + "/ports";
      json r;
      if (port_add->parsed()) {
        r = client.Request("POST", ports, json{{"guest_port", guest_port}}.dump(),
                           TokenHeader(entry));
      } else if (port_rm->parsed()) {
        r = client.Request("DELETE", ports + "/" + std::to_string(guest_port), "",
                           TokenHeader(entry));
      } else {
        r = client.Request("GET", ports);
      }
      if (as_json) {
        std::cout << (port_list->parsed() ? r["ports"] : r).dump(2) << "\n";
      } else if (port_add->parsed()) {
        std::printf("%s:%d -> %s port %d\n", r.value("host", std::string()).c_str(),
                    r.value("host_port", 0), id.c_str(), r.value("guest_port", 0));
      } else if (port_rm->parsed()) {
        std::printf("closed port %lld of %s\n", guest_port, id.c_str());
      } else {
        std::printf("%-6s %s\n", "GUEST", "HOST");
        for (const json& p : r.value("ports", json::array())) {
          std::printf("%-6d %s:%d\n", p.value("guest_port", 0),
                      p.value("host", std::string()).c_str(), p.value("host_port", 0));
        }
      }
    } else if (exec->parsed()) {
      auto entry = Remembered().Get(id);
      return RunExec([&] { return target.Client(RememberedServer(entry)); }, TokenHeader(entry), id,
                     exec_options);
    } else if (cp->parsed()) {
      std::string guest_path;
      const bool from_guest = SplitGuestPath(cp_from, id, guest_path);
      if (!from_guest && !SplitGuestPath(cp_to, id, guest_path)) {
        throw ApiError(0, "cp: one side must be ID:PATH");
      }
      auto entry = Remembered().Get(id);
      ApiClient client = target.Client(RememberedServer(entry));
      if (from_guest) {
        CopyFromGuest(client, TokenHeader(entry), id, guest_path, cp_to);
      } else {
        CopyToGuest(client, TokenHeader(entry), cp_from, id, guest_path, cp_tar);
      }
    } else if (extend->parsed()) {
      auto entry = Remembered().Get(id);
      ApiClient client = target.Client(RememberedServer(entry));
      json body = json::object();
      if (extend_ttl) body["ttl_seconds"] = *extend_ttl;
      json s = client.Request("PATCH", "/v1/sandboxes/" + PathSegment(id), body.dump(),
                              TokenHeader(entry));
      if (as_json) {
        std::cout << s.dump(2) << "\n";
      } else if (s.contains("ttl_left_seconds")) {
        std::printf("%s: paused; %lld s to live from its resume\n", id.c_str(),
                    s["ttl_left_seconds"].get<long long>());
      } else {
        const bool expires = s.contains("expires_at") && s["expires_at"].is_string();
        std::printf("%s: expires at %s\n", id.c_str(),
                    expires ? s["expires_at"].get<std::string>().c_str() : "(no time set)");
      }
    } else if (destroy->parsed()) {
      auto entry = Remembered().Get(id);
      ApiClient client = target.Client(RememberedServer(entry));
      Headers headers = TokenHeader(entry);
      json r = client.Request("DELETE", "/v1/sandboxes/" + PathSegment(id), "", headers);
      Remembered().Forget(id);
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        std::printf("destroyed %s\n", id.c_str());
      }
    } else if (events->parsed()) {
      events_options.json = as_json;
      ApiClient client = target.Client();
      return ephemera::cli::RunEvents(client, events_options);
    } else if (top->parsed()) {
      ApiClient client = target.Client();
      return ephemera::cli::RunTop(
          client, {std::chrono::milliseconds(static_cast<long>(top_interval * 1000)), top_once});
    } else if (status->parsed()) {
      json r = target.Client().Request("GET", "/v1/status");
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        PrintStatus(r);
      }
    } else if (image_list->parsed()) {
      json r = target.Client().Request("GET", "/v1/images");
      if (as_json) {
        std::cout << r["images"].dump(2) << "\n";
      } else {
        PrintImages(r["images"]);
      }
    } else if (image_inspect->parsed()) {
      json r = target.Client().Request("GET", "/v1/images/" + PathSegment(inspect_name));
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        PrintImageDetails(r);
      }
    } else if (image_rm->parsed()) {
      json r = target.Client().Request("DELETE", "/v1/images/" + PathSegment(rm_name));
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        std::printf("removed image %s\n", rm_name.c_str());
      }
    } else if (image_prune->parsed()) {
      json r = target.Client().Request("POST", "/v1/images/prune");
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        for (const auto& f : r["removed"])
          std::printf("removed %s\n", f.get<std::string>().c_str());
      }
    } else if (image_pull->parsed()) {
      json body = {{"name", pull_name}};
      if (!pull_kernel.empty()) body["kernel"] = AbsoluteReference(pull_kernel);
      if (!pull_rootfs.empty()) {
        body["rootfs"] = AbsoluteReference(pull_rootfs);
      }
      if (pull_headroom) body["headroom_mib"] = *pull_headroom;
      ephemera::cli::PullProgressPrinter progress(stderr, ::isatty(STDERR_FILENO) == 1);
      json r = target.Client().Request("POST", "/v1/images", body.dump(), {},
                                       [&](std::string_view line) { progress.Line(line); });
      progress.Done();
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        PrintFields(r, {"name", "dir", "kernel_digest", "rootfs_digest", "rootfs_bytes", "cached"});
      }
    } else if (ssh->parsed()) {
      return Ssh(id, command);
    } else if (token_add->parsed()) {
      json body = json::object();
      if (token_name) body["name"] = *token_name;
      if (expires_in) body["expires_in_seconds"] = ParseDuration(*expires_in);
      if (max_sandboxes) body["max_sandboxes"] = *max_sandboxes;
      if (rate) body["rate_per_minute"] = *rate;
      json t = target.Client().Request("POST", "/v1/tokens", body.dump());
      if (as_json) {
        std::cout << t.dump(2) << "\n";
      } else {
        PrintFields(t, {"id", "name", "token", "enabled", "created_at", "expires_at",
                        "max_sandboxes", "rate_per_minute"});
      }
      std::fflush(stdout);
      std::fprintf(stderr,
                   "ephemera: the token is shown only this once; ephemerad keeps only a hash of "
                   "it.\n  Use it as: ephemera --remote https://HOST:PORT --token TOKEN create\n");
    } else if (token_list->parsed()) {
      json r = target.Client().Request("GET", "/v1/tokens");
      if (as_json) {
        std::cout << r["tokens"].dump(2) << "\n";
      } else {
        PrintTokens(r["tokens"]);
      }
    } else if (token_enable->parsed() || token_disable->parsed()) {
      bool enable = token_enable->parsed();
      json t = target.Client().Request("PATCH", "/v1/tokens/" + PathSegment(token_id),
                                       json{{"enabled", enable}}.dump());
      if (as_json) {
        std::cout << t.dump(2) << "\n";
      } else {
        std::printf("%s token %s\n", enable ? "enabled" : "disabled", token_id.c_str());
      }
    } else if (token_delete->parsed()) {
      json r = target.Client().Request("DELETE", "/v1/tokens/" + PathSegment(token_id));
      if (as_json) {
        std::cout << r.dump(2) << "\n";
      } else {
        std::printf("deleted token %s\n", token_id.c_str());
      }
    } else if (server_list->parsed()) {
      json servers = json::array();
      std::vector<std::vector<std::string>> rows = {
          {"SERVER", "CERTIFICATE SHA256", "PINNED AT", "TOKEN"}};
      for (const auto& [url, entry] : ServerStore().All()) {
        servers.push_back(
            {{"server", url},
             {"certificate_sha256",
              entry.certificate_sha256 ? json(*entry.certificate_sha256) : json(nullptr)},
             {"pinned_at", entry.pinned_at ? json(*entry.pinned_at) : json(nullptr)},
             {"token_remembered", entry.token.has_value()}});
        rows.push_back({url, entry.certificate_sha256.value_or("-"), entry.pinned_at.value_or("-"),
                        entry.token ? "remembered" : "-"});
      }
      if (as_json) {
        std::cout << servers.dump(2) << "\n";
      } else {
        PrintColumns(rows);
      }
    } else if (server_forget->parsed()) {
      std::string url = ParseServerUrl(server_url).str();
      ServerStore store;
      if (!store.Forget(url)) {
        std::fprintf(stderr, "ephemera: %s is not in %s\n", url.c_str(), store.file().c_str());
        return 1;
      }
      std::printf("forgot %s: its certificate will be trusted anew on next contact\n", url.c_str());
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

// wirt: manage your VMs on a shared host by writing files in your home
// (~/wirt/service/vm/NAME/...) that ephemerad answers in ~/wirt/info and
// ~/wirt/logs. It writes what a user could write by hand, so it works the
// same whether the daemon runs or not.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/sandbox_access.h"
#include "cli/wirt_tree.h"
#include "core/error.h"
#include "core/text.h"
#include "core/unique_fd.h"
#include "wirt/layout.h"

namespace {

namespace fs = std::filesystem;
using ephemera::Error;
using ephemera::ErrorCode;
using ephemera::Fail;
using ephemera::FailErrno;
using ephemera::UniqueFd;
using ephemera::cli::SandboxAccess;
using namespace ephemera::wirt_cli;

// Set for the ssh child: the credentials file whose password the askpass
// run of wirt prints, so the password is never in argv or a file of ours.
constexpr char kAskpassVariable[] = "WIRT_ASKPASS_FILE";
constexpr std::size_t kMaxCredentialsBytes = 64 * 1024;

CLI::Validator VmName() {
  return CLI::Validator(
      [](std::string& name) -> std::string {
        try {
          ephemera::wirt::CheckVmName(name);
          return "";
        } catch (const Error& e) {
          return e.what();
        }
      },
      "NAME", "VM name");
}

SandboxAccess ReadCredentials(const fs::path& file) {
  std::optional<std::string> text = ReadTreeFile(file, kMaxCredentialsBytes);
  if (!text) {
    Fail(ErrorCode::kNotFound, "no credentials in {} yet (is the VM running? see wirt status)",
         file.string());
  }
  nlohmann::json entry = nlohmann::json::parse(*text, nullptr, false);
  try {
    return ephemera::cli::ParseSandboxAccess(entry);
  } catch (const std::invalid_argument& e) {
    Fail(ErrorCode::kFailedPrecondition, "the credentials in {} are unusable: {}", file.string(),
         e.what());
  }
}

// As SSH_ASKPASS: prints the password of the credentials file named in the
// environment.
int Askpass(const char* file) {
  try {
    std::printf("%s\n", ReadCredentials(file).password.c_str());
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}

int Ssh(const Tree& tree, const std::string& name, const std::vector<std::string>& command) {
  fs::path credentials = tree.CredentialsFile(name);
  SandboxAccess access = ReadCredentials(credentials);
  // Absolute: ssh may run the askpass from another working directory.
  return ephemera::cli::RunSsh(access, command, "wirt", kAskpassVariable,
                               fs::absolute(credentials).string());
}

// Copies the log to stdout as it is: it may be large, and the daemon has
// already made each line safe to print.
int PrintLog(const Tree& tree, const std::string& name) {
  fs::path log = tree.LogFile(name);
  UniqueFd fd(::open(log.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd && errno == ENOENT) {
    std::fprintf(stderr, "%s: no log yet (%s)\n", name.c_str(), log.c_str());
    return 0;
  }
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0)
    FailErrno(fmt::format("cannot read {}", log.string()), errno);
  if (!S_ISREG(st.st_mode))
    Fail(ErrorCode::kFailedPrecondition, "{} is not a regular file", log.string());
  char buffer[65536];
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) FailErrno(fmt::format("cannot read {}", log.string()), errno);
    if (got == 0) break;
    std::fwrite(buffer, 1, static_cast<std::size_t>(got), stdout);
  }
  return 0;
}

int Status(const Tree& tree, const std::string& name, bool as_xml, bool as_json) {
  if (!tree.Knows(name)) {
    Fail(ErrorCode::kNotFound, "no VM named {} (nothing in {} nor {})", name,
         (tree.home() / ephemera::wirt::kServiceDir).string(),
         (tree.home() / ephemera::wirt::kInfoDir).string());
  }
  std::optional<std::string> xml = ReadTreeFile(tree.StatusFile(name), 256 * 1024);
  if (!xml) {
    if (as_json) {
      std::cout << nlohmann::json{{"name", name}, {"state", nullptr}}.dump(2) << "\n";
    } else {
      std::printf("%s: no status yet (the daemon has not answered)\n", name.c_str());
    }
    return 0;
  }
  VmStatus status = ParseStatusXml(*xml);
  if (status.name.empty()) status.name = name;
  if (as_xml) {
    std::fwrite(xml->data(), 1, xml->size(), stdout);
  } else if (as_json) {
    std::cout << StatusToJson(status).dump(2) << "\n";
  } else {
    std::fputs(FormatStatus(status).c_str(), stdout);
  }
  return 0;
}

int List(const Tree& tree, bool as_json) {
  nlohmann::json vms = nlohmann::json::array();
  std::vector<std::array<std::string, 4>> rows = {{"NAME", "STATE", "AUTOSTART", "SSH"}};
  for (const std::string& name : tree.VmNames()) {
    std::optional<VmStatus> status;
    std::string state = "-";
    try {
      status = ReadStatus(tree, name);
      if (status && !status->state.empty()) state = ephemera::EscapeForLog(status->state, 32);
    } catch (const Error& e) {
      std::fprintf(stderr, "wirt: %s\n", e.what());
      state = "unreadable";
    }
    std::string autostart =
        status && !status->autostart.empty() ? ephemera::EscapeForLog(status->autostart, 8) : "-";
    std::string ssh = status ? SshSummary(*status) : "-";
    rows.push_back({name, state, autostart, ssh});
    nlohmann::json vm = status ? StatusToJson(*status) : nlohmann::json::object();
    vm["name"] = name;
    if (!status) vm["state"] = nullptr;
    vms.push_back(vm);
  }
  if (as_json) {
    std::cout << vms.dump(2) << "\n";
    return 0;
  }
  std::array<std::size_t, 4> widths{};
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  for (const auto& row : rows) {
    std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(widths[0]), row[0].c_str(),
                static_cast<int>(widths[1]), row[1].c_str(), static_cast<int>(widths[2]),
                row[2].c_str(), row[3].c_str());
  }
  return 0;
}

// One subcommand per request file; the members are bound to CLI11.
struct RequestCommand {
  std::string file_name;
  CLI::App* app = nullptr;
  std::string name;
  std::vector<std::string> words;  // more parameters, as the file takes them
  bool graceful = false;
  std::optional<std::string> mode;
  bool disable = false;
  bool wait = false;
  double timeout_seconds = 600;

  std::string ParamsLine() const {
    std::string line;
    auto add = [&](const std::string& word) { line += (line.empty() ? "" : " ") + word; };
    if (graceful) add("--graceful");
    if (mode) add("--mode " + *mode);
    if (disable) add("--disable");
    for (const auto& word : words) add(word);
    return line;
  }
};

int Request(const Tree& tree, const RequestCommand& command, bool as_json) {
  PendingRequest request =
      WriteRequest(tree, command.name, command.file_name, command.ParamsLine());
  if (!command.wait) {
    std::printf("%s: %s requested (%s); see wirt status %s\n", command.name.c_str(),
                command.file_name.c_str(), request.path.c_str(), command.name.c_str());
    return 0;
  }
  auto timeout = std::chrono::milliseconds(static_cast<long long>(command.timeout_seconds * 1000));
  Answer answer = WaitForAnswer(tree, request, timeout);
  if (answer.outcome == Outcome::kTimedOut) {
    std::string why =
        answer.request_taken
            ? fmt::format("the daemon took the request, but {} is still {}", command.name,
                          answer.status && !answer.status->state.empty()
                              ? ephemera::EscapeForLog(answer.status->state, 32)
                              : "without a status")
            : fmt::format("{} is still waiting (is ephemerad running?)", request.path.string());
    Fail(ErrorCode::kTimeout, "{}: no answer to {} within {} s: {}", command.name,
         command.file_name, command.timeout_seconds, why);
  }
  const std::optional<VmStatus>& status = answer.status;
  if (as_json) {
    nlohmann::json j = status ? StatusToJson(*status) : nlohmann::json::object();
    j["name"] = command.name;
    std::cout << j.dump(2) << "\n";
  } else if (status) {
    std::printf("%s: %s\n", command.name.c_str(),
                status->state.empty() ? "-" : ephemera::EscapeForLog(status->state, 32).c_str());
    if (status->state == "running" && !status->ssh_host.empty())
      std::printf("  ssh  %s  (wirt ssh %s)\n", SshSummary(*status).c_str(), command.name.c_str());
  } else {
    std::printf("%s: %s done\n", command.name.c_str(), command.file_name.c_str());
  }
  if (answer.outcome == Outcome::kFailed) {
    std::string message = status && !status->last_message.empty()
                              ? ephemera::EscapeForLog(status->last_message, 2048)
                              : "(the daemon gave no reason)";
    std::fflush(stdout);
    std::fprintf(stderr, "wirt: %s: %s failed: %s\n", command.name.c_str(),
                 command.file_name.c_str(), message.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* file = std::getenv(kAskpassVariable)) return Askpass(file);
  ::umask(022);  // the daemon refuses group- or world-writable files

  CLI::App app{
      "wirt: manage your VMs on this host by writing requests in ~/wirt, which ephemerad "
      "answers in ~/wirt/info and ~/wirt/logs",
      "wirt"};
  app.failure_message(
      [](const CLI::App*, const CLI::Error& e) { return "wirt: " + std::string(e.what()) + "\n"; });
  app.set_version_flag("--version", "wirt 0.1.0");
  std::string home_dir;
  bool as_json = false;
  auto* home_option = app.add_option("--home", home_dir,
                                     "the home whose wirt tree to use (default: yours, from the "
                                     "password database)")
                          ->type_name("DIR");
  app.add_flag("--json", as_json, "print JSON for scripts (status, list, --wait)");
  app.require_subcommand(1);
  app.fallthrough();  // the global options also after the subcommand

  auto* create = app.add_subcommand("create", "write a VM's config (it does not start it)");
  std::string create_name;
  std::optional<std::string> image;
  std::optional<unsigned> memory, vcpus;
  std::optional<std::int64_t> ttl;
  std::vector<std::string> ssh_keys;
  bool autostart = false, force = false;
  create->add_option("name", create_name, "the VM's name")->required()->check(VmName());
  create->add_option("--image", image, "image name")->type_name("IMG");
  create->add_option("--memory", memory, "guest memory in MiB")->type_name("MIB");
  create->add_option("--vcpus", vcpus, "virtual CPUs")->type_name("N");
  create->add_option("--ttl", ttl, "seconds an instance lives")->type_name("SECONDS");
  create
      ->add_option("--ssh-key", ssh_keys,
                   "a public key line, or a file of them (like ~/.ssh/id_ed25519.pub); "
                   "repeatable")
      ->type_name("KEY-OR-FILE")
      ->allow_extra_args(false);
  create->add_flag("--autostart", autostart, "start it again whenever the daemon starts");
  create->add_flag("--force", force, "replace an existing config");

  std::array<RequestCommand, 5> requests = {RequestCommand{"start"}, RequestCommand{"stop"},
                                            RequestCommand{"shutdown"}, RequestCommand{"destroy"},
                                            RequestCommand{"autostart"}};
  for (RequestCommand& request : requests) {
    auto action = *ephemera::wirt::ParseActionFile(request.file_name);
    std::string help = request.file_name == "autostart"
                           ? "turn autostart on (or off with --disable)"
                           : fmt::format("request {} of a VM (parameters: {})", request.file_name,
                                         ephemera::wirt::AllowedParams(action));
    request.app = app.add_subcommand(request.file_name, help);
    request.app->add_option("name", request.name, "the VM's name")->required()->check(VmName());
    request.app->add_option("params", request.words,
                            "further parameters, as the request file takes them (after --)");
    if (action == ephemera::wirt::Action::kShutdown) {
      request.app->add_flag("--graceful", request.graceful, "an ACPI power-off (the default)");
      request.app->add_option("--mode", request.mode, "how to shut down: acpi (the only mode)")
          ->type_name("MODE")
          ->check(CLI::IsMember({"acpi"}));
    }
    if (action == ephemera::wirt::Action::kAutostart)
      request.app->add_flag("--disable", request.disable, "turn autostart off");
    request.app->add_flag("--wait", request.wait,
                          "wait for the daemon's answer; fail if the request failed");
    request.app->add_option("--timeout", request.timeout_seconds, "how long --wait waits")
        ->type_name("SECONDS")
        ->check(CLI::Range(0.0, 1e7))
        ->capture_default_str();
  }

  std::string name;
  auto* status = app.add_subcommand("status", "show what the daemon says of a VM");
  bool as_xml = false;
  status->add_option("name", name, "the VM's name")->required()->check(VmName());
  status->add_flag("--xml", as_xml, "print status.xml as the daemon wrote it");
  auto* list = app.add_subcommand("list", "list your VMs: NAME STATE AUTOSTART SSH");
  auto* logs = app.add_subcommand("logs", "print a VM's log");
  logs->add_option("name", name, "the VM's name")->required()->check(VmName());
  auto* ssh = app.add_subcommand("ssh", "log in to a running VM (ssh NAME [-- COMMAND...])");
  std::vector<std::string> command;
  ssh->add_option("name", name, "the VM's name")->required()->check(VmName());
  ssh->add_option("command", command, "command to run instead of a shell");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    Tree tree(home_option->count() ? fs::path(home_dir) : HomeOfUser(::getuid()));
    if (create->parsed()) {
      ephemera::wirt::VmConfig config;
      config.image = image;
      config.memory_mib = memory;
      config.vcpus = vcpus;
      config.ttl_seconds = ttl;
      config.ssh_keys = ReadSshKeyArguments(ssh_keys);
      if (autostart) config.autostart = true;
      fs::path file = WriteVmConfig(tree, create_name, config, force);
      std::printf("%s: config written to %s; start it with: wirt start %s\n", create_name.c_str(),
                  file.c_str(), create_name.c_str());
      return 0;
    }
    for (const RequestCommand& request : requests) {
      if (request.app->parsed()) return Request(tree, request, as_json);
    }
    if (status->parsed()) return Status(tree, name, as_xml, as_json);
    if (list->parsed()) return List(tree, as_json);
    if (logs->parsed()) {
      if (!tree.Knows(name)) Fail(ErrorCode::kNotFound, "no VM named {}", name);
      return PrintLog(tree, name);
    }
    if (ssh->parsed()) return Ssh(tree, name, command);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "wirt: %s\n", e.what());
    // What the user typed was refused before anything was written.
    return e.code() == ErrorCode::kInvalidArgument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "wirt: %s\n", e.what());
    return 1;
  }
  return 0;
}

// ephemerad: the ephemera daemon.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string_view>

#include "config/config.h"
#include "core/error.h"
#include "daemon/logging.h"
#include "daemon/selftest.h"
#include "daemon/serve.h"

namespace {

// Under the installation's sysconfdir (CMake's GNUInstallDirs).
constexpr char kDefaultConfig[] = EPHEMERA_CONFIG_FILE;
// Where a packaged ephemerad reads it: one found there by a daemon built
// for another prefix is most likely meant for it.
constexpr char kDebianConfig[] = "/etc/ephemera/config.yaml";

}  // namespace

int main(int argc, char** argv) {
  using namespace ephemera;
  CLI::App app{"ephemerad: hands out disposable, isolated Linux machines"};
  app.set_version_flag("--version", "ephemerad 0.1.0");
  std::string config_path;
  std::string state_dir;
  std::string image_dir;
  std::string log_level;
  app.add_option("--config", config_path,
                 "configuration file (default " + std::string(kDefaultConfig) + " if it exists)");
  app.add_option("--state-dir", state_dir, "state directory (overrides state_dir)");
  app.add_option("--image-dir", image_dir, "image cache directory (overrides image_dir)");
  std::string socket;
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (overrides log.level)");
  std::string log_format;
  app.add_option("--log-format", log_format,
                 "text|json|journal (overrides log.format; text goes to the journal, with "
                 "structured fields, when stderr is the journal's)")
      ->check(CLI::IsMember({"text", "json", "journal"}));
  app.add_option("--socket", socket, "local API socket (overrides socket)");
  std::string listen, anweddol_listen, anweddol_web_listen;
  bool insecure_http = false, no_access_tokens = false;
  app.add_option("--listen", listen,
                 "serve the /v1 API over HTTPS on ADDR:PORT (overrides remote.listen)");
  app.add_option("--anweddol-listen", anweddol_listen,
                 "serve the Anweddol classic protocol on ADDR:PORT, e.g. 0.0.0.0:6150 "
                 "(overrides anweddol.listen)");
  app.add_option("--anweddol-web-listen", anweddol_web_listen,
                 "serve the Anweddol web protocol on ADDR:PORT, e.g. 0.0.0.0:8080 "
                 "(overrides anweddol.web_listen)");
  app.add_flag("--insecure-http", insecure_http,
               "serve /v1 on --listen as plain HTTP, without TLS (trusted networks only)");
  app.add_flag("--no-access-tokens", no_access_tokens,
               "remote requests need no access token (trusted networks only)");
  app.require_subcommand(0, 1);

  SelfTestOptions check;
  unsigned boot_timeout_s = 60;
  CLI::App* check_cmd = app.add_subcommand(
      "check", "boot one VM from an image, wait for its sshd, power it off, remove it");
  check_cmd->add_option("--image", check.image, "image name")->capture_default_str();
  check_cmd->add_option("--memory", check.memory_mib, "guest memory in MiB")->capture_default_str();
  check_cmd->add_option("--boot-timeout", boot_timeout_s, "seconds to wait for the guest")
      ->capture_default_str();

  CLI::App* cleanup_cmd = app.add_subcommand(
      "cleanup",
      "with no ephemerad running: destroy every sandbox it left (VMs, containers, networks), "
      "then exit");

  CLI11_PARSE(app, argc, argv);
  try {
    Config config;
    if (!config_path.empty()) {
      config = LoadConfigFile(config_path);
    } else if (std::filesystem::exists(kDefaultConfig)) {
      config = LoadConfigFile(kDefaultConfig);
    }
    if (!state_dir.empty()) config.state_dir = std::filesystem::absolute(state_dir);
    if (!image_dir.empty()) config.image_dir = std::filesystem::absolute(image_dir);
    if (!log_level.empty()) config.log.level = log_level;
    if (!log_format.empty()) config.log.format = log_format;
    if (!socket.empty()) config.socket = std::filesystem::absolute(socket);
    auto flag_address = [](const char* flag, const std::string& text) {
      try {
        return ListenAddress::Parse(text);
      } catch (const Error& e) {
        throw e.WithContext(flag);
      }
    };
    if (!listen.empty()) config.remote.listen = flag_address("--listen", listen);
    if (!anweddol_listen.empty()) {
      config.anweddol.listen = flag_address("--anweddol-listen", anweddol_listen);
    }
    if (!anweddol_web_listen.empty()) {
      config.anweddol.web_listen = flag_address("--anweddol-web-listen", anweddol_web_listen);
    }
    if (insecure_http) config.remote.insecure_http = true;
    if (no_access_tokens) config.remote.access_tokens = false;
    SetupLogging(config.log.level, config.log.format);

    if (config_path.empty() && std::string_view(kDefaultConfig) != kDebianConfig &&
        std::filesystem::exists(kDebianConfig)) {
      spdlog::warn("{} is not read: this ephemerad's configuration is {} (or --config)",
                   kDebianConfig, kDefaultConfig);
    }
    if (cleanup_cmd->parsed()) return Serve(config, ServeMode::kCleanup);
    if (!check_cmd->parsed()) return Serve(config);
    {
      check.boot_timeout = std::chrono::seconds(boot_timeout_s);
      SelfTestReport r = RunSelfTest(config, check);
      fmt::print(
          "check: ok: launch {} ms, guest init {} ms, sshd up {} ms, power-off {} ms ({}), "
          "qemu rss {} KiB\n",
          r.start.count(), r.init.count(), r.sshd.count(), r.powerdown.count(),
          r.graceful ? "graceful" : "forced", r.qemu_rss_kib);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "ephemerad: %s\n", e.what());
    return 1;
  }
  return 0;
}

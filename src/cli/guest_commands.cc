#include "cli/guest_commands.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include "core/base64.h"

namespace ephemera::cli {

using nlohmann::json;

namespace {

std::atomic<bool> window_changed{false};

void OnWindowChange(int) { window_changed = true; }

// The terminal in raw mode for as long as it lives (a TTY exec).
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

std::optional<std::pair<int, int>> TerminalSize() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_row == 0) return std::nullopt;
  return std::pair<int, int>{size.ws_row, size.ws_col};
}

// Feeds this process's stdin to the program, and its terminal's size when
// it changes, until stdin ends or `stop`.
void FeedInput(ApiClient client, Headers token, std::string base, bool tty,
               const std::atomic<bool>& stop) {
  std::string buffer(64 * 1024, '\0');
  Headers headers = token;
  headers.emplace_back("Content-Type", "application/octet-stream");
  try {
    while (!stop) {
      if (tty && window_changed.exchange(false)) {
        if (auto size = TerminalSize()) {
          client.Request("POST", base + "/resize",
                         json{{"rows", size->first}, {"cols", size->second}}.dump(), token);
        }
      }
      pollfd wait{STDIN_FILENO, POLLIN, 0};
      if (::poll(&wait, 1, 200) <= 0) continue;
      ssize_t n = ::read(STDIN_FILENO, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        client.Request("POST", base + "/stdin?eof=1", "", token);
        return;
      }
      client.Request("POST", base + "/stdin", std::string(buffer.data(), n), headers);
    }
  } catch (const ApiError&) {
    // The program ended (its exec is gone) or the daemon went: the output
    // side reports what matters.
  }
}

}  // namespace

int RunExec(const ClientMaker& make_client, const Headers& token, const std::string& id,
            const ExecOptions& options) {
  json body{{"argv", options.argv}, {"tty", options.tty}};
  if (options.interactive || options.tty) body["stdin"] = true;
  if (!options.cwd.empty()) body["cwd"] = options.cwd;
  if (!options.user.empty()) body["user"] = options.user;
  if (options.timeout_seconds > 0) body["timeout_seconds"] = options.timeout_seconds;
  json env = json::object();
  for (const std::string& entry : options.env) {
    const auto equals = entry.find('=');
    if (equals == std::string::npos || equals == 0) {
      throw ApiError(0, "--env takes NAME=value, not '" + entry + "'");
    }
    env[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  if (!env.empty()) body["env"] = env;
  if (options.tty) {
    if (auto size = TerminalSize()) {
      body["rows"] = size->first;
      body["cols"] = size->second;
    }
  }
  std::optional<RawTerminal> raw;
  if (options.tty && ::isatty(STDIN_FILENO)) {
    raw.emplace();
    ::signal(SIGWINCH, OnWindowChange);
  }
  const std::string sandbox = "/v1/sandboxes/" + PathSegment(id);
  std::atomic<bool> stop{false};
  std::thread feeder;
  json end;
  ApiClient client = make_client();
  try {
    client.Request("POST", sandbox + "/exec", body.dump(), token, [&](std::string_view line) {
      json event = json::parse(line, nullptr, false);
      if (!event.is_object()) return;
      if (event.contains("exec") && (options.interactive || options.tty)) {
        const std::string base = sandbox + "/exec/" + event["exec"].value("id", "");
        feeder = std::thread(FeedInput, make_client(), token, base, options.tty, std::cref(stop));
      }
      for (const auto& [name, fd] :
           {std::pair{"stdout", STDOUT_FILENO}, {"stderr", STDERR_FILENO}}) {
        if (event.contains(name) && event[name].is_string()) {
          std::optional<std::string> bytes = Base64Decode(event[name].get<std::string>());
          if (bytes) WriteAll(fd, *bytes, "the output");
        }
      }
      if (event.contains("exit")) end = event["exit"];
    });
  } catch (...) {
    stop = true;
    if (feeder.joinable()) feeder.join();
    throw;
  }
  stop = true;
  if (feeder.joinable()) feeder.join();
  raw.reset();
  if (!end.is_object()) throw ApiError(0, "the exec ended without its exit status");
  if (end.value("timed_out", false)) return 124;
  if (end.contains("code")) return end["code"].get<int>();
  return 128 + end.value("signal", 0);
}

bool SplitGuestPath(const std::string& text, std::string& id, std::string& path) {
  const auto colon = text.find(':');
  // A local path may hold a colon too, but never before its first '/'.
  if (colon == std::string::npos || colon == 0 || text.find('/') < colon) return false;
  id = text.substr(0, colon);
  path = text.substr(colon + 1);
  return true;
}

}  // namespace ephemera::cli

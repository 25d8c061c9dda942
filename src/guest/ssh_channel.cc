#include "guest/ssh_channel.h"

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <poll.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/text.h"
#include "guest/ssh_session.h"

namespace ephemera {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kPiece = 64 * 1024;
constexpr std::size_t kMaxErrors = 4096;
constexpr std::string_view kPidMarker = "ephemera-pid ";

int SignalNumber(const std::string& name) {
  static const std::map<std::string, int> kSignals = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},   {"ABRT", SIGABRT},
      {"FPE", SIGFPE},   {"KILL", SIGKILL}, {"SEGV", SIGSEGV}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
      {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};
  auto it = kSignals.find(name);
  return it == kSignals.end() ? 0 : it->second;
}

std::unique_ptr<SshSession> Connect(const SshTarget& target) {
  auto session =
      std::make_unique<SshSession>(target.host, target.port, target.user, target.connect_timeout);
  if (session->HostKeyLine() != target.host_key) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest at {}:{} shows another host key than the one provisioning pinned", target.host,
         target.port);
  }
  if (!session->AuthenticateWithKey(*target.key)) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest refuses the daemon's key for {} (removed from its authorized_keys?)",
         target.user);
  }
  return session;
}

class SshStream : public GuestStream {
 public:
  enum class Kind { kProcess, kFileRead, kFileWrite };

  SshStream(SshTarget target, std::unique_ptr<SshSession> session, Kind kind, bool tty,
            Clock::time_point kill_at)
      : target_(std::move(target)),
        session_(std::move(session)),
        kind_(kind),
        tty_(tty),
        kill_at_(kill_at) {}

  ~SshStream() override {
    if (!ended_) KillGroup(kind_ == Kind::kFileWrite ? SIGTERM : SIGKILL);
    if (channel_) {
      ssh_channel_close(channel_);
      ssh_channel_free(channel_);
    }
  }

  void Open(const std::string& script, std::uint16_t rows, std::uint16_t cols) {
    ssh_session s = session_->raw();
    channel_ = ssh_channel_new(s);
    if (channel_ == nullptr || ssh_channel_open_session(channel_) != SSH_OK) {
      Fail(ErrorCode::kUnavailable, "SSH: cannot open a session: {}", ssh_get_error(s));
    }
    ssh_callbacks_init(&callbacks_);
    callbacks_.userdata = this;
    callbacks_.channel_exit_signal_function = [](ssh_session, ssh_channel, const char* signal, int,
                                                 const char*, const char*, void* self) {
      static_cast<SshStream*>(self)->exit_signal_ = SignalNumber(signal ? signal : "");
    };
    ssh_set_channel_callbacks(channel_, &callbacks_);
    if (tty_ && ssh_channel_request_pty_size(channel_, "xterm", cols, rows) != SSH_OK) {
      Fail(ErrorCode::kUnavailable, "SSH: the guest gives no terminal: {}", ssh_get_error(s));
    }
    if (ssh_channel_request_exec(channel_, script.c_str()) != SSH_OK) {
      Fail(ErrorCode::kUnavailable, "SSH: cannot run a command: {}", ssh_get_error(s));
    }
  }

  const json& started() const override { return started_; }

  GuestEvent Next(Clock::time_point deadline) override {
    if (end_) return *end_;
    for (;;) {
      if (!timed_out_ && Clock::now() >= kill_at_) {
        timed_out_ = true;
        KillGroup(SIGKILL);
      }
      {
        std::lock_guard lock(mutex_);
        for (int is_stderr : {0, 1}) {
          std::string data(kPiece, '\0');
          int n = ssh_channel_read_nonblocking(channel_, data.data(),
                                               static_cast<std::uint32_t>(data.size()), is_stderr);
          if (n == SSH_ERROR)
            return EndLocked({{"error", "the SSH connection to the guest broke"}});
          if (n <= 0) continue;
          data.resize(static_cast<std::size_t>(n));
          // The shell's first line (on the terminal, or stderr) is its pid.
          if (!group_known_ && (tty_ ? is_stderr == 0 : is_stderr == 1)) {
            data = TakeMarker(std::move(data));
            if (data.empty()) continue;
          }
          if (auto event = Deliver(is_stderr == 1, std::move(data))) return *event;
        }
        if (ssh_channel_is_eof(channel_) || ssh_channel_is_closed(channel_)) return Finish();
      }
      if (Clock::now() >= deadline) Fail(ErrorCode::kTimeout, "no output from the guest yet");
      pollfd wait{ssh_get_fd(session_->raw()), POLLIN, 0};
      const auto until = std::min(deadline, kill_at_);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      ::poll(&wait, 1, static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 100)));
    }
  }

  void Write(std::string_view data, Clock::time_point) override {
    std::lock_guard lock(mutex_);
    if (ended_ || input_closed_) Fail(ErrorCode::kFailedPrecondition, "no more input is taken");
    while (!data.empty()) {
      const auto piece = static_cast<std::uint32_t>(std::min(data.size(), kPiece));
      int n = ssh_channel_write(channel_, data.data(), piece);
      if (n == SSH_ERROR) {
        Fail(ErrorCode::kUnavailable, "SSH: cannot send input to the guest: {}",
             ssh_get_error(session_->raw()));
      }
      data.remove_prefix(static_cast<std::size_t>(n));
      written_ += static_cast<std::uint64_t>(n);
    }
  }

  void CloseInput() override {
    std::lock_guard lock(mutex_);
    if (!std::exchange(input_closed_, true) && !ended_) ssh_channel_send_eof(channel_);
  }

  void Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point) override {
    if (!tty_) Fail(ErrorCode::kFailedPrecondition, "the exec has no terminal");
    std::lock_guard lock(mutex_);
    ssh_channel_change_pty_size(channel_, cols, rows);
  }

  // A file being written is dropped by its shell's trap, which SIGKILL
  // would skip.
  void Signal(int signal) override {
    if (!ended_) KillGroup(kind_ == Kind::kFileWrite && signal == SIGKILL ? SIGTERM : signal);
  }

  bool ended() override { return ended_; }

 private:
  std::string TakeMarker(std::string data) {
    marker_ += data;
    const std::size_t newline = marker_.find('\n');
    if (newline == std::string::npos) {
      if (marker_.size() > 64) group_known_ = true;  // not ours: pass it on below
      return group_known_ ? std::exchange(marker_, "") : "";
    }
    group_known_ = true;
    std::string line = marker_.substr(0, newline);
    std::string rest = marker_.substr(newline + 1);
    marker_.clear();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind(kPidMarker, 0) != 0) return line + "\n" + rest;
    try {
      group_ = std::stoi(line.substr(kPidMarker.size()));
    } catch (const std::exception&) {
      group_ = 0;
    }
    return rest;
  }

  std::optional<GuestEvent> Deliver(bool is_stderr, std::string data) {
    if (kind_ != Kind::kProcess && is_stderr) {
      if (errors_.size() < kMaxErrors) errors_ += data.substr(0, kMaxErrors - errors_.size());
      return std::nullopt;
    }
    read_ += data.size();
    return GuestEvent{
        is_stderr ? GuestEvent::Kind::kStderr : GuestEvent::Kind::kStdout, std::move(data), {}};
  }

  GuestEvent Finish() {
    const int status = ssh_channel_get_exit_status(channel_);
    if (kind_ == Kind::kProcess) {
      if (timed_out_) return EndLocked({{"signal", SIGKILL}, {"timed_out", true}});
      if (exit_signal_ != 0) return EndLocked({{"signal", exit_signal_}});
      return EndLocked({{"exit", status}});
    }
    if (status != 0) {
      std::string why = errors_.empty() ? fmt::format("exit status {}", status) : errors_;
      while (!why.empty() && why.back() == '\n') why.pop_back();
      return EndLocked({{"error", why}});
    }
    return EndLocked({{"size", kind_ == Kind::kFileRead ? read_ : written_}});
  }

  GuestEvent EndLocked(json end) {
    ended_ = true;
    end_ = GuestEvent{GuestEvent::Kind::kEnd, {}, std::move(end)};
    return *end_;
  }

  // The session's process group, over a connection of its own (this one
  // may be busy or stuck).
  void KillGroup(int signal) {
    if (group_ <= 1) return;
    try {
      Connect(target_)->Execute(
          fmt::format("kill -{0} -{1} 2>/dev/null || kill -{0} {1} 2>/dev/null", signal, group_),
          std::chrono::seconds(10));
    } catch (const Error& e) {
      spdlog::warn("cannot signal process group {} in the guest at {}: {}", group_, target_.host,
                   e.what());
    }
  }

  SshTarget target_;
  std::unique_ptr<SshSession> session_;
  ssh_channel channel_ = nullptr;
  ssh_channel_callbacks_struct callbacks_{};
  const Kind kind_;
  const bool tty_;
  const Clock::time_point kill_at_;
  json started_ = json::object();
  std::mutex mutex_;  // libssh's session and channel are not thread-safe
  std::atomic<bool> ended_{false};
  std::atomic<int> group_{0};
  bool group_known_ = false;  // Next's alone, as the rest below
  std::string marker_;
  int exit_signal_ = 0;
  bool input_closed_ = false;
  bool timed_out_ = false;
  std::string errors_;
  std::uint64_t read_ = 0, written_ = 0;
  std::optional<GuestEvent> end_;
};

}  // namespace

std::string ShellQuote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string ShellCommandFor(const GuestCommand& command) {
  std::string script = "printf '" + std::string(kPidMarker) + "%s\\n' $$ >&2; ";
  for (const auto& [name, value] : command.env)
    script += "export " + ShellQuote(name + "=" + value) + "; ";
  if (!command.cwd.empty()) script += "cd -- " + ShellQuote(command.cwd) + " || exit 1; ";
  script += "exec";
  for (const std::string& arg : command.argv) script += " " + ShellQuote(arg);
  return script;
}

namespace {

std::shared_ptr<GuestStream> Start(const SshTarget& target, const std::string& script,
                                   const GuestCommand& options, SshStream::Kind kind) {
  auto stream = std::make_shared<SshStream>(
      target, Connect(target), kind, options.tty,
      options.timeout_ms > 0 ? Clock::now() + std::chrono::milliseconds(options.timeout_ms)
                             : Clock::time_point::max());
  stream->Open(script, options.rows, options.cols);
  if (!options.stdin_open && !options.tty) stream->CloseInput();
  return stream;
}

}  // namespace

std::shared_ptr<GuestStream> SshChannel::Exec(const GuestCommand& command, Clock::time_point) {
  if (command.user != target_.user) {
    Fail(ErrorCode::kInvalidArgument,
         "this sandbox runs programs as its client account {} only (its image has no guest "
         "agent): not as {}",
         target_.user, EscapeForLog(command.user, 64));
  }
  return Start(target_, ShellCommandFor(command), command, SshStream::Kind::kProcess);
}

GuestFileType SshChannel::Stat(const std::string& path, Clock::time_point) {
  const std::string p = ShellQuote(path);
  CommandResult r = Connect(target_)->Execute(
      "if [ -d " + p + " ]; then echo d; elif [ -e " + p + " ]; then echo f; else echo n; fi",
      std::chrono::seconds(30));
  if (r.out == "n\n") Fail(ErrorCode::kNotFound, "no {} in the guest", EscapeForLog(path, 200));
  if (r.out != "d\n" && r.out != "f\n") {
    Fail(ErrorCode::kFailedPrecondition, "the guest cannot tell what {} is: {}",
         EscapeForLog(path, 200), EscapeForLog(r.err, 200));
  }
  return GuestFileType{r.out == "d\n"};
}

std::shared_ptr<GuestStream> SshChannel::Read(const std::string& path, Clock::time_point) {
  return Start(target_, ShellCommandFor({.argv = {"cat", "--", path}}), {},
               SshStream::Kind::kFileRead);
}

std::shared_ptr<GuestStream> SshChannel::Write(const std::string& path, std::optional<mode_t> mode,
                                               const std::string& owner, Clock::time_point) {
  if (!owner.empty() && owner != target_.user) {
    Fail(ErrorCode::kInvalidArgument,
         "this sandbox writes files as its client account {} only (its image has no guest "
         "agent): not as {}",
         target_.user, EscapeForLog(owner, 64));
  }
  // Beside its place under a fresh name, renamed over it once whole; the
  // trap drops it when the transfer stops.
  const std::string p = ShellQuote(path);
  const std::string script = fmt::format(
      "printf '{}%s\\n' $$ >&2; p={}; "
      "if [ -d \"$p\" ]; then echo \"$p is a folder\" >&2; exit 1; fi; "
      "t=$(mktemp \"$(dirname -- \"$p\")/.ephemera-upload.XXXXXX\") || exit 1; "
      "trap 'rm -f -- \"$t\"' EXIT; trap 'exit 143' TERM HUP INT; "
      "cat > \"$t\" && chmod {:o} -- \"$t\" && mv -f -- \"$t\" \"$p\"",
      kPidMarker, p, mode.value_or(0644) & 07777);
  GuestCommand options;
  options.stdin_open = true;
  return Start(target_, script, options, SshStream::Kind::kFileWrite);
}

}  // namespace ephemera

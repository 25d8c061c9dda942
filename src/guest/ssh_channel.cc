#include "guest/ssh_channel.h"

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/random.h"
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

}  // namespace

// Each is one SSH connection of its own. libssh's session is not
// thread-safe: every call into it holds mutex_, and nothing blocks while
// holding it (input goes in as the guest's window allows).
class SshStream : public GuestStream {
 public:
  enum class Kind { kProcess, kFileRead, kFileWrite };

  // For a file written: where it goes once complete, and its mode.
  struct Commit {
    std::string temp, path;
    mode_t mode = 0644;
  };

  SshStream(SshTarget target, std::unique_ptr<SshSession> session, Kind kind, bool tty,
            Clock::time_point kill_at, Commit commit)
      : target_(std::move(target)),
        session_(std::move(session)),
        kind_(kind),
        tty_(tty),
        kill_at_(kill_at),
        commit_(std::move(commit)) {}

  ~SshStream() override {
    // Cut off (its sandbox going away): nothing in the guest is reached.
    if (!ended_ && !aborted_) {
      KillGroup(kind_ == Kind::kProcess ? SIGKILL : SIGTERM);
      // A file not put in place leaves nothing behind.
      if (kind_ == Kind::kFileWrite) RunBesides("rm -f -- " + ShellQuote(commit_.temp));
    }
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
    callbacks_.channel_exit_status_function = [](ssh_session, ssh_channel, int status, void* self) {
      static_cast<SshStream*>(self)->exit_status_ = status;
    };
    callbacks_.channel_exit_signal_function = [](ssh_session, ssh_channel, const char* signal, int,
                                                 const char*, const char*, void* self) {
      static_cast<SshStream*>(self)->exit_signal_ = SignalNumber(signal ? signal : "");
      if (static_cast<SshStream*>(self)->exit_signal_ == 0) {
        static_cast<SshStream*>(self)->exit_signal_ = -1;  // one without a number here
      }
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
        if (!KillGroup(SIGKILL)) Abort();
      }
      {
        std::lock_guard lock(mutex_);
        if (aborted_) return EndLocked({{"error", "the SSH connection to the guest was cut"}});
        for (int is_stderr : {0, 1}) {
          std::string data(kPiece, '\0');
          int n = ssh_channel_read_nonblocking(channel_, data.data(),
                                               static_cast<std::uint32_t>(data.size()), is_stderr);
          if (n == SSH_ERROR)
            return EndLocked({{"error", "the SSH connection to the guest broke"}});
          if (n <= 0) continue;
          data.resize(static_cast<std::size_t>(n));
          // The shell's pid comes first on the terminal (after any echo of
          // early input), or on stderr.
          if (!group_known_ && (tty_ ? is_stderr == 0 : is_stderr == 1)) {
            data = TakeMarker(std::move(data));
            if (data.empty()) continue;
          }
          if (auto event = Deliver(is_stderr == 1, std::move(data))) return *event;
        }
        // Past the guest's EOF, libssh reads packets only when asked for a
        // status: asked without blocking, so the callbacks see it come.
        if (ssh_channel_is_eof(channel_) && !exit_status_ && exit_signal_ == 0) {
          ssh_set_blocking(session_->raw(), 0);
          ssh_channel_get_exit_status(channel_);
          ssh_set_blocking(session_->raw(), 1);
        }
        // Ended once its status came (a program may close its output and
        // go on), or the channel closed without one.
        if (exit_status_ || exit_signal_ != 0 || ssh_channel_is_closed(channel_)) {
          return FinishLocked();
        }
      }
      if (Clock::now() >= deadline) Fail(ErrorCode::kTimeout, "no output from the guest yet");
      WaitForTraffic(std::min(deadline, kill_at_));
    }
  }

  void Write(std::string_view data, Clock::time_point deadline) override {
    while (!data.empty()) {
      {
        std::lock_guard lock(mutex_);
        if (ended_ || aborted_ || input_closed_) {
          Fail(ErrorCode::kFailedPrecondition, "no more input is taken");
        }
        std::uint32_t window = ssh_channel_window_size(channel_);
        if (window == 0) {
          ssh_channel_poll(channel_, 0);  // takes the guest's window adjustments in
          window = ssh_channel_window_size(channel_);
        }
        if (window > 0) {
          const auto piece =
              static_cast<std::uint32_t>(std::min<std::size_t>({data.size(), kPiece, window}));
          int n = ssh_channel_write(channel_, data.data(), piece);
          if (n == SSH_ERROR) {
            Fail(ErrorCode::kUnavailable, "SSH: cannot send input to the guest: {}",
                 ssh_get_error(session_->raw()));
          }
          data.remove_prefix(static_cast<std::size_t>(n));
          written_ += static_cast<std::uint64_t>(n);
          continue;
        }
      }
      if (Clock::now() >= deadline) Fail(ErrorCode::kTimeout, "the guest takes no input");
      WaitForTraffic(deadline);
    }
  }

  void CloseInput() override {
    std::lock_guard lock(mutex_);
    if (std::exchange(input_closed_, true) || ended_) return;
    ssh_channel_send_eof(channel_);
    input_complete_ = true;
  }

  void Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point) override {
    if (!tty_) Fail(ErrorCode::kFailedPrecondition, "the exec has no terminal");
    std::lock_guard lock(mutex_);
    ssh_channel_change_pty_size(channel_, cols, rows);
  }

  // A file's transfer stops whole (its shell's trap drops what it wrote);
  // a program gets the signal, and a KILL that cannot reach it cuts it off.
  void Signal(int signal) override {
    if (ended_) return;
    if (kind_ != Kind::kProcess) {
      KillGroup(SIGTERM);
      Abort();
      return;
    }
    if (!KillGroup(signal) && signal == SIGKILL) Abort();
  }

  bool ended() override { return ended_; }

  // Cuts the connection: the next Next ends with an error.
  void Abort() {
    aborted_ = true;
    ::shutdown(ssh_get_fd(session_->raw()), SHUT_RDWR);
  }

 private:
  void WaitForTraffic(Clock::time_point until) {
    pollfd wait{ssh_get_fd(session_->raw()), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    ::poll(&wait, 1, static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 50)));
  }

  std::string TakeMarker(std::string data) {
    head_ += data;
    const std::size_t at = head_.find(kPidMarker);
    const std::size_t newline = at == std::string::npos ? at : head_.find('\n', at);
    if (newline == std::string::npos) {
      if (head_.size() <= kMaxErrors) return "";
      group_known_ = true;  // none came: pass it all on
      return std::exchange(head_, "");
    }
    group_known_ = true;
    try {
      group_ = std::stoi(head_.substr(at + kPidMarker.size(), newline - at - kPidMarker.size()));
    } catch (const std::exception&) {
      group_ = 0;
    }
    std::string rest = head_.substr(0, at) + head_.substr(newline + 1);
    head_.clear();
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

  GuestEvent FinishLocked() {
    if (kind_ == Kind::kProcess) {
      if (timed_out_) return EndLocked({{"signal", SIGKILL}, {"timed_out", true}});
      if (exit_signal_ > 0) return EndLocked({{"signal", exit_signal_}});
      if (!exit_status_)
        return EndLocked({{"error", "the guest ended the session without a status"}});
      return EndLocked({{"exit", *exit_status_}});
    }
    if (exit_status_.value_or(-1) != 0) {
      std::string why = errors_.empty() ? "the guest's command failed" : errors_;
      while (!why.empty() && why.back() == '\n') why.pop_back();
      return EndLocked({{"error", why}});
    }
    if (kind_ == Kind::kFileRead) return EndLocked({{"size", read_}});
    // Put in place only when all of it was sent, and all of it arrived.
    if (!input_complete_) return EndLocked({{"error", "the transfer stopped before its end"}});
    CommandResult put = RunBesides(fmt::format(
        "f=$(wc -c < {0}) && [ \"$f\" -eq {1} ] && chmod {2:o} -- {0} && mv -f -- {0} {3} || "
        "{{ rm -f -- {0}; exit 1; }}",
        ShellQuote(commit_.temp), written_, commit_.mode & 07777, ShellQuote(commit_.path)));
    if (put.exit_status != 0) {
      return EndLocked({{"error", fmt::format("cannot put the file in place: {}", put.err)}});
    }
    return EndLocked({{"size", written_}});
  }

  GuestEvent EndLocked(json end) {
    ended_ = true;
    end_ = GuestEvent{GuestEvent::Kind::kEnd, {}, std::move(end)};
    return *end_;
  }

  // A command over a connection of its own (this one may be busy or cut).
  CommandResult RunBesides(const std::string& command) {
    try {
      return Connect(target_)->Execute(command, std::chrono::seconds(30));
    } catch (const Error& e) {
      spdlog::warn("SSH to the guest at {}: '{}' failed: {}", target_.host,
                   command.substr(0, command.find(' ')), e.what());
      return CommandResult{-1, "", e.what()};
    }
  }

  // The session's process group; false when it is not known yet or the
  // guest could not be told.
  bool KillGroup(int signal) {
    if (group_ <= 1) return false;
    return RunBesides(
               fmt::format("kill -{0} -{1} 2>/dev/null || kill -{0} {1}", signal, group_.load()))
               .exit_status == 0;
  }

  SshTarget target_;
  std::unique_ptr<SshSession> session_;
  ssh_channel channel_ = nullptr;
  ssh_channel_callbacks_struct callbacks_{};
  const Kind kind_;
  const bool tty_;
  const Clock::time_point kill_at_;
  const Commit commit_;
  json started_ = json::object();
  std::mutex mutex_;
  std::atomic<bool> ended_{false}, aborted_{false};
  std::atomic<int> group_{0};
  // Under mutex_ (the callbacks run inside libssh calls made under it).
  std::optional<int> exit_status_;
  int exit_signal_ = 0;
  bool input_closed_ = false, input_complete_ = false;
  std::uint64_t written_ = 0;
  // Next's alone.
  bool group_known_ = false;
  std::string head_;
  bool timed_out_ = false;
  std::string errors_;
  std::uint64_t read_ = 0;
  std::optional<GuestEvent> end_;
};

static std::shared_ptr<SshStream> Start(const SshTarget& target, const std::string& script,
                                        const GuestCommand& options, SshStream::Kind kind,
                                        SshStream::Commit commit = {}) {
  auto stream = std::make_shared<SshStream>(
      target, Connect(target), kind, options.tty,
      options.timeout_ms > 0 ? Clock::now() + std::chrono::milliseconds(options.timeout_ms)
                             : Clock::time_point::max(),
      std::move(commit));
  stream->Open(script, options.rows, options.cols);
  if (!options.stdin_open && !options.tty) stream->CloseInput();
  return stream;
}

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

void SshChannel::Close() {
  std::vector<std::weak_ptr<SshStream>> streams;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    streams.swap(streams_);
  }
  for (const auto& weak : streams) {
    if (auto stream = weak.lock()) stream->Abort();
  }
}

std::shared_ptr<GuestStream> SshChannel::Track(std::shared_ptr<SshStream> stream) {
  std::lock_guard lock(mutex_);
  if (closed_) {
    stream->Abort();
    Fail(ErrorCode::kFailedPrecondition, "the sandbox is going away");
  }
  std::erase_if(streams_, [](const auto& weak) { return weak.expired(); });
  streams_.push_back(stream);
  return stream;
}

std::shared_ptr<GuestStream> SshChannel::Exec(const GuestCommand& command, Clock::time_point) {
  if (command.user != target_.user) {
    Fail(ErrorCode::kInvalidArgument,
         "this sandbox runs programs as its client account {} only (its image has no guest "
         "agent): not as {}",
         target_.user, EscapeForLog(command.user, 64));
  }
  return Track(Start(target_, ShellCommandFor(command), command, SshStream::Kind::kProcess));
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
  return Track(Start(target_, ShellCommandFor({.argv = {"cat", "--", path}}), {},
                     SshStream::Kind::kFileRead));
}

std::shared_ptr<GuestStream> SshChannel::Write(const std::string& path, std::optional<mode_t> mode,
                                               const std::string& owner, Clock::time_point) {
  if (!owner.empty() && owner != target_.user) {
    Fail(ErrorCode::kInvalidArgument,
         "this sandbox writes files as its client account {} only (its image has no guest "
         "agent): not as {}",
         target_.user, EscapeForLog(owner, 64));
  }
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash + 1 == path.size()) {
    Fail(ErrorCode::kInvalidArgument, "'path' must name a file, not a folder: {}",
         EscapeForLog(path, 200));
  }
  // Written to a fresh name beside its place (the client's alone until
  // then); the stream's end puts it in place once it is whole.
  SshStream::Commit commit;
  commit.path = path;
  commit.temp =
      path.substr(0, slash + 1) + ".ephemera-upload." + RandomString(16, "0123456789abcdef");
  commit.mode = mode.value_or(0644);
  const std::string script = fmt::format(
      "printf '{}%s\\n' $$ >&2; p={}; t={}; "
      "if [ -d \"$p\" ]; then echo \"$p is a folder\" >&2; exit 1; fi; "
      "trap 'rm -f -- \"$t\"; exit 143' TERM HUP INT; umask 077; cat > \"$t\"",
      kPidMarker, ShellQuote(commit.path), ShellQuote(commit.temp));
  GuestCommand options;
  options.stdin_open = true;
  return Track(Start(target_, script, options, SshStream::Kind::kFileWrite, std::move(commit)));
}

}  // namespace ephemera

#include "container/container_channel.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/text.h"
#include "core/unix_socket.h"

namespace ephemera {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kPiece = 256 * 1024;

int MillisUntil(Clock::time_point at) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at - Clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000));
}

std::string Relative(const std::string& path) {
  std::size_t start = path.find_first_not_of('/');
  return start == std::string::npos ? "" : path.substr(start);
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// The terminal's master end, which the runtime sends to its console socket.
UniqueFd ReceiveTerminal(int listener, const SpawnedProcess& runtime, Clock::time_point deadline) {
  pollfd fds[2] = {{listener, POLLIN, 0}, {runtime.pidfd.get(), POLLIN, 0}};
  for (;;) {
    int ready = ::poll(fds, 2, MillisUntil(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) FailErrno("cannot wait for the container's terminal", errno);
    if (fds[0].revents != 0) break;
    if (fds[1].revents != 0 || Clock::now() >= deadline) {
      Fail(ErrorCode::kUnavailable, "the container runtime made no terminal for the exec");
    }
  }
  UniqueFd connection(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!connection) FailErrno("cannot take the container's terminal", errno);
  char byte;
  iovec io{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  pollfd wait{connection.get(), POLLIN, 0};
  if (::poll(&wait, 1, MillisUntil(deadline)) <= 0 ||
      ::recvmsg(connection.get(), &message, MSG_CMSG_CLOEXEC) <= 0) {
    Fail(ErrorCode::kUnavailable, "the container runtime sent no terminal for the exec");
  }
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  if (header == nullptr || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(sizeof(int))) {
    Fail(ErrorCode::kUnavailable, "the container runtime's console message holds no descriptor");
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
  return UniqueFd(fd);
}

// A process started by the runtime's exec: its output and errors (or its
// terminal), its input, and the runtime's exit, which is the process's.
class ProcessStream : public GuestStream {
 public:
  struct Parts {
    SpawnedProcess runtime;
    UniqueFd input;     // the process's stdin (or the terminal)
    UniqueFd output;    // its stdout (or the terminal)
    UniqueFd errors;    // its stderr, and the runtime's own messages
    UniqueFd terminal;  // with a tty: the master, for input and resizes
    fs::path pid_file;
    std::vector<fs::path> files;  // removed at the end
    Clock::time_point kill_at = Clock::time_point::max();
    std::string pid_namespace;               // the container's (/proc/PID/ns/pid)
    std::shared_ptr<const Cgroups> cgroups;  // where its processes are listed
    std::string cgroup;
  };

  explicit ProcessStream(Parts parts) : p_(std::move(parts)) {
    if (p_.output) SetNonBlocking(p_.output.get());
    if (p_.errors) SetNonBlocking(p_.errors.get());
    if (p_.input) SetNonBlocking(p_.input.get());
  }

  ~ProcessStream() override {
    KillAll(SIGKILL);
    std::lock_guard lock(kill_mutex_);
    if (!reaped_) {
      int status;
      while (::waitpid(p_.runtime.pid, &status, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
    for (const fs::path& file : p_.files) ::unlink(file.c_str());
  }

  // The terminal's master, which the runtime sends to `listener`.
  void AttachTerminal(int listener, Clock::time_point deadline, std::uint16_t rows,
                      std::uint16_t cols) {
    p_.terminal = ReceiveTerminal(listener, p_.runtime, deadline);
    p_.output = UniqueFd(::fcntl(p_.terminal.get(), F_DUPFD_CLOEXEC, 0));
    p_.input = UniqueFd(::fcntl(p_.terminal.get(), F_DUPFD_CLOEXEC, 0));
    SetNonBlocking(p_.terminal.get());
    winsize size{rows, cols, 0, 0};
    ::ioctl(p_.terminal.get(), TIOCSWINSZ, &size);
  }

  const json& started() const override { return started_; }

  GuestEvent Next(Clock::time_point deadline) override {
    if (end_) return *end_;
    for (;;) {
      if (!timed_out_ && Clock::now() >= p_.kill_at) {
        KillAll(SIGKILL);
        timed_out_ = true;
      }
      pollfd fds[3];
      int count = 0;
      if (p_.output) fds[count++] = {p_.output.get(), POLLIN, 0};
      if (p_.errors) fds[count++] = {p_.errors.get(), POLLIN, 0};
      const int streams = count;
      if (!exited_) fds[count++] = {p_.runtime.pidfd.get(), POLLIN, 0};
      // Once the runtime is gone, what is left in the pipes and no more: a
      // background child may hold them open for ever.
      if (exited_ && streams == 0) return Finish();
      const int wait = exited_ ? 0 : MillisUntil(std::min(deadline, p_.kill_at));
      int ready = ::poll(fds, count, wait);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) FailErrno("cannot wait for the exec's output", errno);
      if (ready == 0) {
        if (exited_) return Finish();
        if (Clock::now() >= deadline) Fail(ErrorCode::kTimeout, "no output from the exec yet");
        continue;
      }
      for (int i = 0; i < streams; ++i) {
        if (fds[i].revents == 0) continue;
        const bool is_output = p_.output && fds[i].fd == p_.output.get();
        std::string data(kPiece, '\0');
        ssize_t n = ::read(fds[i].fd, data.data(), data.size());
        if (n > 0) {
          data.resize(static_cast<std::size_t>(n));
          return GuestEvent{is_output ? GuestEvent::Kind::kStdout : GuestEvent::Kind::kStderr,
                            std::move(data),
                            {}};
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        // End of file, or EIO from a terminal whose last user closed it.
        (is_output ? p_.output : p_.errors).reset();
      }
      if (!exited_ && fds[count - 1].revents != 0) exited_ = true;
    }
  }

  void Write(std::string_view data, Clock::time_point deadline) override {
    std::lock_guard lock(input_mutex_);
    if (ended_ || !p_.input) Fail(ErrorCode::kFailedPrecondition, "the exec takes no more input");
    while (!data.empty()) {
      ssize_t n = ::write(p_.input.get(), data.data(), data.size());
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EPIPE) {  // it stopped reading: the rest has nowhere to go
        p_.input.reset();
        return;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) FailErrno("cannot feed the exec", errno);
      pollfd wait{p_.input.get(), POLLOUT, 0};
      if (::poll(&wait, 1, MillisUntil(deadline)) == 0 && Clock::now() >= deadline) {
        Fail(ErrorCode::kTimeout, "the exec takes no input");
      }
    }
  }

  void CloseInput() override {
    std::lock_guard lock(input_mutex_);
    if (!p_.input) return;
    if (p_.terminal) {
      // A terminal has no end of file of its own: its EOF character, as a
      // user would type it.
      const char eof = '\x04';
      (void)!::write(p_.input.get(), &eof, 1);
    }
    p_.input.reset();
  }

  void Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point) override {
    if (!p_.terminal) Fail(ErrorCode::kFailedPrecondition, "the exec has no terminal");
    winsize size{rows, cols, 0, 0};
    if (::ioctl(p_.terminal.get(), TIOCSWINSZ, &size) != 0) {
      FailErrno("cannot resize the exec's terminal", errno);
    }
  }

  void Signal(int signal) override {
    if (!ended_) KillAll(signal, signal == SIGKILL);
  }

  bool ended() override { return ended_; }

 private:
  // The runtime's own group, and the process's: the runtime puts it in a
  // session of its own (whose leader stays outside the container), which
  // holds what it started too.
  // A caller's signal goes to the exec's processes alone (the runtime
  // passes the status on); a timeout's kill takes the runtime too. The
  // exec's processes are those of the container's cgroup in its session
  // (which the runtime opened for it) or below it: found there, a pid that
  // was reused elsewhere on the host is never hit.
  void KillAll(int signal, bool runtime_too = true) {
    std::lock_guard lock(kill_mutex_);
    if (reaped_) return;
    LearnProcess();
    if (exec_pid_ > 1) {
      for (pid_t pid : p_.cgroups->Pids(p_.cgroup)) {
        if (pid == exec_pid_ || (session_ > 1 && ::getsid(pid) == session_) ||
            Descends(pid, exec_pid_)) {
          ::kill(pid, signal);
        }
      }
    }
    if (runtime_too || exec_pid_ <= 1) ::kill(-p_.runtime.pid, signal);
  }

  // The exec's pid (from the runtime's pid file, checked to be in the
  // container's pid namespace) and its session.
  void LearnProcess() {
    if (exec_pid_ > 1) return;
    try {
      const long pid = std::stol(ReadFile(p_.pid_file));
      if (pid <= 1 || pid > std::numeric_limits<pid_t>::max()) return;
      std::error_code ec;
      const auto ns = fs::read_symlink(fmt::format("/proc/{}/ns/pid", pid), ec);
      if (ec || ns.string() != p_.pid_namespace) return;
      exec_pid_ = static_cast<pid_t>(pid);
      session_ = ::getsid(exec_pid_);
    } catch (const std::exception&) {
      // Not started yet: the runtime's group is all there is.
    }
  }

  static bool Descends(pid_t pid, pid_t ancestor) {
    for (int depth = 0; depth < 64 && pid > 1; ++depth) {
      std::string status;
      try {
        status = ReadFile(fmt::format("/proc/{}/status", pid));
      } catch (const std::exception&) {
        return false;
      }
      const std::size_t at = status.find("\nPPid:");
      if (at == std::string::npos) return false;
      pid = static_cast<pid_t>(std::strtol(status.c_str() + at + 7, nullptr, 10));
      if (pid == ancestor) return true;
    }
    return false;
  }

  GuestEvent Finish() {
    int status = 0;
    {
      std::lock_guard lock(kill_mutex_);
      while (::waitpid(p_.runtime.pid, &status, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
    json end;
    if (timed_out_) {
      end = {{"signal", SIGKILL}, {"timed_out", true}};
    } else if (WIFSIGNALED(status)) {
      end = {{"signal", WTERMSIG(status)}};
    } else {
      end = {{"exit", WEXITSTATUS(status)}};
    }
    {
      std::lock_guard lock(input_mutex_);
      p_.input.reset();
      ended_ = true;
    }
    end_ = GuestEvent{GuestEvent::Kind::kEnd, {}, std::move(end)};
    return *end_;
  }

  Parts p_;
  json started_ = json::object();
  std::mutex input_mutex_;
  std::mutex kill_mutex_;  // kills against the reap, so no reused pid is hit
  bool reaped_ = false;
  pid_t exec_pid_ = 0, session_ = 0;
  std::atomic<bool> ended_{false};
  bool exited_ = false;  // Next's alone, as the rest below
  bool timed_out_ = false;
  std::optional<GuestEvent> end_;
};

// A file of the container read whole.
class FileReadStream : public GuestStream {
 public:
  FileReadStream(UniqueFd fd, std::uint64_t size) : fd_(std::move(fd)) {
    started_ = {{"size", size}};
  }
  const json& started() const override { return started_; }
  GuestEvent Next(Clock::time_point) override {
    if (end_) return *end_;
    std::string data(kPiece, '\0');
    ssize_t n;
    do {
      n = ::read(fd_.get(), data.data(), data.size());
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      data.resize(static_cast<std::size_t>(n));
      read_ += data.size();
      return GuestEvent{GuestEvent::Kind::kStdout, std::move(data), {}};
    }
    json end = n == 0 ? json{{"size", read_}} : json{{"error", std::strerror(errno)}};
    end_ = GuestEvent{GuestEvent::Kind::kEnd, {}, std::move(end)};
    ended_ = true;
    return *end_;
  }
  void Write(std::string_view, Clock::time_point) override {
    Fail(ErrorCode::kFailedPrecondition, "a file being read takes no input");
  }
  void CloseInput() override {}
  void Resize(std::uint16_t, std::uint16_t, Clock::time_point) override {
    Fail(ErrorCode::kFailedPrecondition, "a file has no terminal");
  }
  void Signal(int) override {}
  bool ended() override { return ended_; }

 private:
  UniqueFd fd_;
  json started_;
  std::uint64_t read_ = 0;
  std::atomic<bool> ended_{false};
  std::optional<GuestEvent> end_;
};

// A file written beside its place under a name of its own, and renamed
// over it once whole: nobody in the container sees half of one, and a
// transfer cut short leaves nothing.
class FileWriteStream : public GuestStream {
 public:
  FileWriteStream(UniqueFd dir, std::string temp, std::string name, UniqueFd file)
      : dir_(std::move(dir)),
        temp_(std::move(temp)),
        name_(std::move(name)),
        file_(std::move(file)) {}
  ~FileWriteStream() override { Abandon(); }

  const json& started() const override { return started_; }

  GuestEvent Next(Clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return end_.has_value(); })) {
      Fail(ErrorCode::kTimeout, "the file is still being written");
    }
    return *end_;
  }

  void Write(std::string_view data, Clock::time_point) override {
    std::lock_guard lock(mutex_);
    if (end_ || !file_) Fail(ErrorCode::kFailedPrecondition, "the file takes no more input");
    while (!data.empty()) {
      ssize_t n = ::write(file_.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int error = errno;
        EndLocked({{"error", fmt::format("cannot write {}: {}", name_, std::strerror(error))}});
        FailErrno("cannot write the file in the container", error,
                  error == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kInternal);
      }
      data.remove_prefix(static_cast<std::size_t>(n));
      written_ += static_cast<std::uint64_t>(n);
    }
  }

  void CloseInput() override {
    std::lock_guard lock(mutex_);
    if (end_) return;
    file_.reset();
    if (::renameat(dir_.get(), temp_.c_str(), dir_.get(), name_.c_str()) != 0) {
      EndLocked(
          {{"error", fmt::format("cannot put the file at {}: {}", name_, std::strerror(errno))}});
      return;
    }
    committed_ = true;
    EndLocked({{"size", written_}});
  }

  void Resize(std::uint16_t, std::uint16_t, Clock::time_point) override {
    Fail(ErrorCode::kFailedPrecondition, "a file has no terminal");
  }
  void Signal(int) override { Abandon(); }
  bool ended() override {
    std::lock_guard lock(mutex_);
    return end_.has_value();
  }

 private:
  void Abandon() {
    std::lock_guard lock(mutex_);
    if (!end_) EndLocked({{"error", "abandoned"}});
  }
  void EndLocked(json end) {
    file_.reset();
    if (!committed_) ::unlinkat(dir_.get(), temp_.c_str(), 0);
    end_ = GuestEvent{GuestEvent::Kind::kEnd, {}, std::move(end)};
    changed_.notify_all();
  }

  UniqueFd dir_;
  std::string temp_, name_;
  json started_ = json::object();
  std::mutex mutex_;
  std::condition_variable changed_;
  UniqueFd file_;
  std::uint64_t written_ = 0;
  bool committed_ = false;
  std::optional<GuestEvent> end_;
};

// The kernel's own file systems, where the daemon (host root) would read
// what the container's root may not (kallsyms, firmware serials).
void RefuseKernelFileSystem(int fd, const std::string& path) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) FailErrno("cannot tell the file system of " + path, errno);
  switch (static_cast<unsigned long>(fs.f_type)) {
    case PROC_SUPER_MAGIC:
    case SYSFS_MAGIC:
    case DEBUGFS_MAGIC:
    case TRACEFS_MAGIC:
    case SECURITYFS_MAGIC:
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
    case BPF_FS_MAGIC:
    case DEVPTS_SUPER_MAGIC:
    case PSTOREFS_MAGIC:
    case EFIVARFS_MAGIC:
    case SELINUX_MAGIC:
    case SMACK_MAGIC:
      Fail(ErrorCode::kFailedPrecondition,
           "{} is on one of the kernel's own file systems: read or write it with an exec",
           EscapeForLog(path, 200));
    default:
      return;
  }
}

bool IsExecutableInRoot(int root, const std::string& path) {
  UniqueFd fd(OpenInRoot(root, Relative(path), O_PATH));
  struct stat st {};
  return fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0;
}

// As the process's PATH would find `program` inside the container, so a
// missing one gets a clear error instead of the runtime's exit status.
void CheckProgram(int root, const std::string& program, const std::string& path) {
  if (program.find('/') != std::string::npos) {
    if (program[0] != '/' || IsExecutableInRoot(root, program)) return;  // relative: cwd's
  } else {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      if (!dir.empty() && IsExecutableInRoot(root, dir + "/" + program)) return;
    }
  }
  Fail(ErrorCode::kInvalidArgument, "cannot execute {}: no such program in the container",
       EscapeForLog(program, 256));
}

}  // namespace

ContainerUser FindContainerUser(const std::string& passwd, const std::string& user) {
  const bool numeric = !user.empty() && user.size() <= 10 &&
                       user.find_first_not_of("0123456789") == std::string::npos;
  std::istringstream lines(passwd);
  for (std::string line; std::getline(lines, line);) {
    // name:password:uid:gid:gecos:home:shell
    std::vector<std::string> fields;
    std::size_t at = 0;
    for (std::size_t colon; (colon = line.find(':', at)) != std::string::npos; at = colon + 1) {
      fields.push_back(line.substr(at, colon - at));
    }
    fields.push_back(line.substr(at));
    if (fields.size() < 7) continue;
    try {
      const unsigned long uid = std::stoul(fields[2]), gid = std::stoul(fields[3]);
      if (uid >= 65536 || gid >= 65536) continue;
      if (fields[0] == user || (numeric && std::to_string(uid) == user)) {
        return ContainerUser{static_cast<uid_t>(uid), static_cast<gid_t>(gid), fields[0],
                             fields[5].empty() ? "/" : fields[5]};
      }
    } catch (const std::exception&) {
      continue;  // the container's file: a bad line is skipped
    }
  }
  if (numeric && std::stoul(user) < 65536) {
    const auto id = static_cast<uid_t>(std::stoul(user));
    return ContainerUser{id, id, user, "/"};
  }
  if (user == "root") return ContainerUser{0, 0, "root", "/root"};
  Fail(ErrorCode::kInvalidArgument, "no such user '{}' in the container", EscapeForLog(user, 64));
}

UniqueFd ContainerChannel::OpenRoot() const {
  UniqueFd root(
      ::open(fmt::format("/proc/{}/root", access_.init).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) FailErrno("cannot reach the container's root", errno, ErrorCode::kUnavailable);
  // Still its init (not a process that took the pid after it ended).
  if (!access_.init_pidfd ||
      ::syscall(SYS_pidfd_send_signal, access_.init_pidfd->get(), 0, nullptr, 0) != 0) {
    Fail(ErrorCode::kFailedPrecondition, "container {} is not running", access_.id);
  }
  return root;
}

ContainerUser ContainerChannel::User(int root, const std::string& user) const {
  std::string passwd;
  try {
    passwd = ReadInRoot(root, "etc/passwd", 4 << 20, "the container's users");
  } catch (const Error&) {
    // No readable /etc/passwd: numbers and root only.
  }
  return FindContainerUser(passwd, user);
}

std::shared_ptr<GuestStream> ContainerChannel::Exec(const GuestCommand& command,
                                                    Clock::time_point deadline) {
  UniqueFd root = OpenRoot();
  const ContainerUser user = User(root.get(), command.user);
  // The container's own process spec (capabilities, limits, privileges),
  // with this command, user, folder and terminal.
  json process = json::parse(ReadFile(access_.bundle / "config.json")).at("process");
  process["args"] = command.argv;
  process["cwd"] = command.cwd.empty() ? user.home : command.cwd;
  process["user"] = {{"uid", user.uid}, {"gid", user.gid}};
  process["terminal"] = command.tty;
  if (command.tty) process["consoleSize"] = {{"height", command.rows}, {"width", command.cols}};
  if (user.uid != 0) {
    // As a login of that user would be: no capabilities of its own.
    for (const char* set : {"effective", "permitted", "inheritable", "ambient"}) {
      process["capabilities"][set] = json::array();
    }
  }
  std::map<std::string, std::string> env;
  for (const auto& entry : process.value("env", json::array())) {
    const std::string text = entry.get<std::string>();
    env[text.substr(0, text.find('='))] =
        text.substr(std::min(text.find('='), text.size() - 1) + 1);
  }
  env["HOME"] = user.home;
  env["USER"] = env["LOGNAME"] = user.name;
  if (command.tty) env["TERM"] = "xterm";
  for (const auto& [name, value] : command.env) env[name] = value;
  process["env"] = json::array();
  for (const auto& [name, value] : env) process["env"].push_back(name + "=" + value);
  CheckProgram(root.get(), command.argv.at(0), env["PATH"]);

  const std::string tag = RandomString(12, "0123456789abcdef");
  ProcessStream::Parts parts;
  const fs::path spec_file = access_.scratch / ("exec-" + tag + ".json");
  parts.pid_file = access_.scratch / ("exec-" + tag + ".pid");
  parts.files = {spec_file, parts.pid_file};
  WriteFileAtomic(spec_file, process.dump(), 0600);
  std::vector<std::string> options = {"--process", spec_file.string(), "--pid-file",
                                      parts.pid_file.string()};
  UniqueFd console;
  if (command.tty) {
    const fs::path socket = access_.scratch / ("exec-" + tag + ".sock");
    parts.files.push_back(socket);
    console = ListenUnix(socket);
    options.insert(options.end(), {"--console-socket", socket.string()});
  }
  SpawnSpec spec = runtime_.ExecSpec(access_.id, options);
  spec.cgroup_procs = access_.cgroups->ProcsFiles(access_.cgroup);
  auto [errors_read, errors_write] = MakePipe();
  UniqueFd input_read, output_write;
  if (command.tty) {
    spec.fds = {{errors_write.get(), 1}, {errors_write.get(), 2}};
  } else {
    auto [output_r, output_w] = MakePipe();
    parts.output = std::move(output_r);
    output_write = std::move(output_w);
    spec.fds = {{output_write.get(), 1}, {errors_write.get(), 2}};
    if (command.stdin_open) {
      auto [input_r, input_w] = MakePipe();
      parts.input = std::move(input_w);
      input_read = std::move(input_r);
      spec.fds.emplace_back(input_read.get(), 0);
    }
  }
  parts.errors = std::move(errors_read);
  if (command.timeout_ms > 0) {
    parts.kill_at = Clock::now() + std::chrono::milliseconds(command.timeout_ms);
  }
  parts.pid_namespace = access_.pid_namespace;
  parts.cgroups = access_.cgroups;
  parts.cgroup = access_.cgroup;
  try {
    parts.runtime = Spawn(spec);
  } catch (...) {
    for (const fs::path& file : parts.files) ::unlink(file.c_str());
    throw;
  }
  // From here the stream owns the runtime and the files: a failure below
  // ends both with it.
  auto stream = std::make_shared<ProcessStream>(std::move(parts));
  if (command.tty) stream->AttachTerminal(console.get(), deadline, command.rows, command.cols);
  return stream;
}

UniqueFd ContainerChannel::OpenInContainer(const std::string& path, int flags) const {
  UniqueFd root = OpenRoot();
  UniqueFd fd(OpenInRoot(root.get(), Relative(path), static_cast<std::uint64_t>(flags)));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) {
      Fail(ErrorCode::kNotFound, "no {} in the container", EscapeForLog(path, 200));
    }
    FailErrno(fmt::format("cannot reach {} in the container", EscapeForLog(path, 200)), errno,
              ErrorCode::kFailedPrecondition);
  }
  return fd;
}

GuestFileType ContainerChannel::Stat(const std::string& path, Clock::time_point) {
  UniqueFd fd = OpenInContainer(path, O_PATH);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) FailErrno("cannot stat " + path, errno);
  return GuestFileType{S_ISDIR(st.st_mode)};
}

std::shared_ptr<GuestStream> ContainerChannel::Read(const std::string& path, Clock::time_point) {
  UniqueFd fd = OpenInContainer(path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
  RefuseKernelFileSystem(fd.get(), path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) FailErrno("cannot stat " + path, errno);
  if (!S_ISREG(st.st_mode)) {
    Fail(ErrorCode::kFailedPrecondition, "{} in the container is not a regular file", path);
  }
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return std::make_shared<FileReadStream>(std::move(fd), static_cast<std::uint64_t>(st.st_size));
}

std::shared_ptr<GuestStream> ContainerChannel::Write(const std::string& path,
                                                     std::optional<mode_t> mode,
                                                     const std::string& owner, Clock::time_point) {
  const std::string relative = Relative(path);
  const std::size_t slash = relative.rfind('/');
  const std::string folder = slash == std::string::npos ? "" : relative.substr(0, slash);
  const std::string name = slash == std::string::npos ? relative : relative.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    Fail(ErrorCode::kInvalidArgument, "'path' must name a file, not a folder: {}", path);
  }
  UniqueFd root = OpenRoot();
  const ContainerUser user = User(root.get(), owner.empty() ? "root" : owner);
  UniqueFd dir(OpenInRoot(root.get(), folder, O_PATH | O_DIRECTORY));
  if (!dir) {
    if (errno == ENOENT || errno == ENOTDIR) {
      Fail(ErrorCode::kNotFound, "no folder /{} in the container", folder);
    }
    FailErrno(fmt::format("cannot reach /{} in the container", folder), errno,
              ErrorCode::kFailedPrecondition);
  }
  RefuseKernelFileSystem(dir.get(), path);
  const std::string temp =
      "." + name.substr(0, 200) + ".ephemera-" + RandomString(8, "0123456789abcdef");
  UniqueFd file(::openat(dir.get(), temp.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file) {
    FailErrno(fmt::format("cannot write in /{} of the container", folder), errno,
              errno == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kFailedPrecondition);
  }
  // Its owner as the container's uid map makes it; its mode as asked.
  if (::fchown(file.get(), access_.host_root + user.uid, access_.host_root + user.gid) != 0 ||
      ::fchmod(file.get(), mode.value_or(0644) & 07777) != 0) {
    const int error = errno;
    ::unlinkat(dir.get(), temp.c_str(), 0);
    FailErrno("cannot give the file its owner and mode", error);
  }
  return std::make_shared<FileWriteStream>(std::move(dir), temp, name, std::move(file));
}

}  // namespace ephemera

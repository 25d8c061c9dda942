#include "agent/process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/accounts.h"
#include "agent/error.h"
#include "agent/fields.h"

namespace ephemera::agent {

using nlohmann::json;

namespace {

constexpr size_t kMaxArgs = 4096;
constexpr size_t kMaxArgBytes = 256 * 1024;
constexpr size_t kMaxEnv = 1024;
constexpr int64_t kMaxTimeoutMs = 30LL * 24 * 3600 * 1000;
constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

bool IsUserName(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool IsEnvName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// The value of NAME in NAME=value entries (the last one wins), or nullptr.
const std::string* EnvValue(const std::vector<std::string>& env, std::string_view name) {
  const std::string* found = nullptr;
  for (const std::string& entry : env) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
        entry[name.size()] == '=') {
      found = &entry;
    }
  }
  return found;
}

// argv[0] as execve wants it: through PATH when it names no directory.
std::string ResolveProgram(const std::string& name, const std::vector<std::string>& env) {
  if (name.find('/') != std::string::npos) return name;
  const std::string* path_entry = EnvValue(env, "PATH");
  std::string_view path = path_entry ? std::string_view(*path_entry).substr(5) : kDefaultPath;
  while (true) {
    size_t colon = path.find(':');
    std::string dir(path.substr(0, colon));
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  throw FieldError("argv", "cannot execute " + name.substr(0, 256) + ": not found in PATH");
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void CloseIfOpen(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// What the child reports through its status pipe when it cannot exec.
struct ChildFailure {
  char step[24];
  int error;
};

[[noreturn]] void ChildFail(int status_fd, const char* step) {
  ChildFailure failure{};
  std::strncpy(failure.step, step, sizeof failure.step - 1);
  failure.error = errno;
  (void)!::write(status_fd, &failure, sizeof failure);
  ::_exit(127);
}

}  // namespace

Account LookUpAccount(const Root& root, const std::string& user, const std::string& field) {
  const std::string passwd = ReadFile(root("/etc/passwd"));
  Account account;
  bool found = false;
  for (std::string_view line : SplitLines(passwd)) {
    std::vector<std::string> fields = SplitFields(line);
    if (fields.size() != 7 || fields[0] != user) continue;
    std::optional<uint32_t> uid = Number(fields[2]);
    std::optional<uint32_t> gid = Number(fields[3]);
    if (!uid || !gid || *uid == UINT32_MAX || *gid == UINT32_MAX) {
      throw AgentError(field, "the account " + user + " has a malformed /etc/passwd line");
    }
    account = {user, *uid, *gid, fields[5], fields[6], {}};
    found = true;
    break;
  }
  if (!found) throw FieldError(field, "no such user \"" + user + "\"");
  if (account.home.empty()) account.home = "/";
  if (account.shell.empty()) account.shell = "/bin/sh";
  // Named: the lines are views into it.
  const std::string group = ReadFileIfExists(root("/etc/group")).value_or("");
  for (std::string_view line : SplitLines(group)) {
    std::vector<std::string> fields = SplitFields(line);
    std::optional<uint32_t> gid = Number(fields.size() == 4 ? fields[2] : "");
    if (!gid || *gid == account.gid) continue;
    std::string_view members = fields[3];
    while (!members.empty()) {
      size_t comma = members.find(',');
      if (members.substr(0, comma) == user) {
        account.groups.push_back(*gid);
        break;
      }
      members.remove_prefix(comma == std::string_view::npos ? members.size() : comma + 1);
    }
  }
  return account;
}

ExecRequest ParseExec(const json& request) {
  RefuseUnknownFields(
      request,
      {"id", "op", "argv", "env", "cwd", "user", "tty", "rows", "cols", "timeout_ms", "stdin"}, "");
  ExecRequest exec;
  const json* argv = Find(request, "argv");
  if (argv == nullptr) throw FieldError("argv", "missing");
  if (!argv->is_array() || argv->empty() || argv->size() > kMaxArgs) {
    throw FieldError("argv", "must be a list of 1 to " + std::to_string(kMaxArgs) + " strings");
  }
  size_t bytes = 0;
  for (const json& arg : *argv) {
    if (!arg.is_string()) throw FieldError("argv", "must hold strings only");
    const std::string& text = arg.get_ref<const std::string&>();
    if (text.find('\0') != std::string::npos) throw FieldError("argv", "holds a NUL byte");
    bytes += text.size() + 1;
    exec.argv.push_back(text);
  }
  if (exec.argv[0].empty()) throw FieldError("argv", "the program's name is empty");
  if (bytes > kMaxArgBytes) throw FieldError("argv", "longer than 256 KiB together");
  if (const json* env = Find(request, "env")) {
    if (!env->is_object() || env->size() > kMaxEnv) {
      throw FieldError("env", "must be an object of at most 1024 NAME: value strings");
    }
    for (const auto& [name, value] : env->items()) {
      if (!IsEnvName(name)) throw FieldError("env", "\"" + name.substr(0, 64) + "\" is no name");
      if (!value.is_string() ||
          value.get_ref<const std::string&>().find('\0') != std::string::npos) {
        throw FieldError("env." + name, "must be a string without NUL");
      }
      bytes += name.size() + value.get_ref<const std::string&>().size() + 2;
      exec.env.push_back(name + "=" + value.get<std::string>());
    }
    if (bytes > kMaxArgBytes) throw FieldError("env", "argv and env exceed 256 KiB together");
  }
  if (Find(request, "cwd") != nullptr) {
    exec.cwd = RequireString(request, "cwd", "cwd");
    if (exec.cwd.empty() || exec.cwd[0] != '/' || exec.cwd.find('\0') != std::string::npos ||
        exec.cwd.size() > 4096) {
      throw FieldError("cwd", "must be an absolute path");
    }
  }
  if (Find(request, "user") != nullptr) {
    exec.user = RequireString(request, "user", "user");
    if (!IsUserName(exec.user)) throw FieldError("user", "is not a user name");
  }
  exec.tty = OptionalBool(request, "tty", false);
  exec.rows = static_cast<uint16_t>(OptionalInteger(request, "rows", 1, 10000, 24));
  exec.cols = static_cast<uint16_t>(OptionalInteger(request, "cols", 1, 10000, 80));
  exec.timeout_ms = OptionalInteger(request, "timeout_ms", 0, kMaxTimeoutMs, 0);
  exec.stdin_open = OptionalBool(request, "stdin", false);
  return exec;
}

void ResizeTerminal(int master, uint16_t rows, uint16_t cols) {
  winsize size{rows, cols, 0, 0};
  if (::ioctl(master, TIOCSWINSZ, &size) != 0) {
    throw AgentError("resize", std::string("TIOCSWINSZ: ") + std::strerror(errno));
  }
}

SpawnedProcess Spawn(const ExecRequest& request, const Account& account) {
  std::vector<std::string> env = {"PATH=" + std::string(kDefaultPath), "HOME=" + account.home,
                                  "USER=" + account.name, "LOGNAME=" + account.name,
                                  "SHELL=" + account.shell};
  if (request.tty) env.push_back("TERM=xterm-256color");
  for (const std::string& entry : request.env) {
    std::string_view name = std::string_view(entry).substr(0, entry.find('='));
    std::erase_if(env, [&](const std::string& old) {
      return old.size() > name.size() && old.compare(0, name.size(), name) == 0 &&
             old[name.size()] == '=';
    });
    env.push_back(entry);
  }
  const std::string program = ResolveProgram(request.argv[0], env);
  const std::string cwd = request.cwd.empty() ? account.home : request.cwd;

  // Every descriptor here is O_CLOEXEC: the child keeps only 0, 1 and 2.
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
  int master = -1;
  std::string slave_name;
  auto close_all = [&] {
    for (int* fd :
         {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &status[0], &status[1], &master}) {
      CloseIfOpen(*fd);
    }
  };
  auto fail = [&](const char* what) {
    int saved = errno;
    close_all();
    throw AgentError("exec", std::string(what) + ": " + std::strerror(saved));
  };
  if (::pipe2(status, O_CLOEXEC) != 0) fail("pipe");
  if (request.tty) {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    char name[128];
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0 ||
        ::ptsname_r(master, name, sizeof name) != 0) {
      fail("cannot open a terminal");
    }
    slave_name = name;
    winsize size{request.rows, request.cols, 0, 0};
    ::ioctl(master, TIOCSWINSZ, &size);
  } else {
    if ((request.stdin_open && ::pipe2(in, O_CLOEXEC) != 0) || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
      fail("pipe");
    }
  }

  std::vector<char*> args;
  for (const std::string& arg : request.argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& entry : env) envp.push_back(const_cast<char*>(entry.c_str()));
  envp.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    // The agent blocks SIGIO and SIGCHLD and ignores SIGPIPE: exec keeps both.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::setsid();
    int stdio[3];
    if (request.tty) {
      int slave = ::open(slave_name.c_str(), O_RDWR);
      if (slave < 0) ChildFail(status[1], "open terminal");
      if (::ioctl(slave, TIOCSCTTY, 0) != 0) ChildFail(status[1], "TIOCSCTTY");
      stdio[0] = stdio[1] = stdio[2] = slave;
    } else {
      stdio[0] = request.stdin_open ? in[0] : ::open("/dev/null", O_RDONLY);
      stdio[1] = out[1];
      stdio[2] = err[1];
    }
    for (int fd = 0; fd < 3; ++fd) {
      if (::dup2(stdio[fd], fd) < 0) ChildFail(status[1], "dup2");
    }
    if (stdio[0] > 2) ::close(stdio[0]);  // the terminal or /dev/null, now 0
    if (::setgroups(account.groups.size(), account.groups.data()) != 0) {
      ChildFail(status[1], "setgroups");
    }
    if (::setgid(account.gid) != 0) ChildFail(status[1], "setgid");
    if (::setuid(account.uid) != 0) ChildFail(status[1], "setuid");
    if (::chdir(cwd.c_str()) != 0) ChildFail(status[1], "chdir");
    ::execve(program.c_str(), args.data(), envp.data());
    ChildFail(status[1], "execute");
  }
  CloseIfOpen(status[1]);
  ChildFailure failure{};
  ssize_t got;
  do {
    got = ::read(status[0], &failure, sizeof failure);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof failure)) {
    int child_status = 0;
    ::waitpid(pid, &child_status, 0);
    close_all();
    const std::string cause = std::strerror(failure.error);
    // The request's fault (a folder or program the guest has not): its field.
    if (std::strcmp(failure.step, "chdir") == 0) {
      throw FieldError("cwd", "cannot enter " + cwd + ": " + cause);
    }
    if (std::strcmp(failure.step, "execute") == 0) {
      throw FieldError("argv", "cannot execute " + request.argv[0].substr(0, 256) + ": " + cause);
    }
    throw AgentError("exec", std::string("cannot ") + failure.step + ": " + cause);
  }
  SpawnedProcess process;
  process.pid = pid;
  if (request.tty) {
    process.output = master;
    process.input = ::fcntl(master, F_DUPFD_CLOEXEC, 0);
    master = -1;
  } else {
    process.input = std::exchange(in[1], -1);
    process.output = std::exchange(out[0], -1);
    process.errors = std::exchange(err[0], -1);
  }
  close_all();
  for (int fd : {process.input, process.output, process.errors}) {
    if (fd >= 0) SetNonBlocking(fd);
  }
  return process;
}

}  // namespace ephemera::agent

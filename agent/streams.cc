#include "agent/streams.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "agent/error.h"
#include "agent/fields.h"
#include "agent/process.h"
#include "agent/protocol.h"

namespace ephemera::agent {

using nlohmann::json;
using nlohmann::ordered_json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

enum Role { kOutput, kErrors, kInput };

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

const std::string& RequirePath(const json& request) {
  const std::string& path = RequireString(request, "path", "path");
  if (path.empty() || path[0] != '/' || path.size() > 4096 ||
      path.find('\0') != std::string::npos) {
    throw FieldError("path", "must be an absolute path");
  }
  return path;
}

// NotFoundError for a path (or its folder) that is not there.
[[noreturn]] void FailPath(const char* doing, const std::string& path) {
  const int err = errno;
  if (err == ENOENT || err == ENOTDIR) throw NotFoundError("path", ErrnoText(doing, path, err));
  throw AgentError("path", ErrnoText(doing, path, err));
}

const char* TypeOf(mode_t mode) {
  return S_ISREG(mode) ? "file" : S_ISDIR(mode) ? "directory" : S_ISLNK(mode) ? "symlink" : "other";
}

}  // namespace

struct Streams::Stream {
  enum class Kind { kExec, kRead, kWrite } kind;
  uint64_t id = 0;
  uint64_t unacked = 0;  // output sent, not acked
  // exec
  pid_t pid = -1;
  bool tty = false;
  bool exited = false;
  int status = 0;
  bool timed_out = false;
  std::optional<Clock::time_point> deadline;
  Clock::time_point exited_at{}, last_output{};
  int input = -1, output = -1, errors = -1;
  bool takes_input = false;
  bool input_eof = false;
  std::string pending;  // input not written yet
  // read and write
  int file = -1;
  uint64_t size = 0;
  std::string path, temp;  // temp: the write's file until it is renamed over path
  std::string shown;       // the path as the host gave it
  mode_t mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;

  ~Stream() {
    for (int* fd : {&input, &output, &errors, &file}) CloseFd(*fd);
    if (!temp.empty()) ::unlink(temp.c_str());
  }
};

Streams::Streams(Root root) : root_(std::move(root)) {}

Streams::~Streams() { CloseAll(); }

bool Streams::Handles(const std::string& op) {
  return op == "exec" || op == "stat" || op == "read" || op == "write" || op == "input" ||
         op == "ack" || op == "resize" || op == "signal";
}

void Streams::Emit(ordered_json event) { events_.push_back(event.dump()); }

void Streams::EmitOutput(uint64_t id, const char* name, std::string_view bytes) {
  // Written out by hand: base64 needs no escaping, and dumping a long
  // string through the JSON writer is slow in a guest without KVM.
  std::string event = "{\"stream\":" + std::to_string(id) + ",\"" + name + "\":\"";
  event += EncodeBase64(bytes);
  event += "\"}";
  events_.push_back(std::move(event));
}

std::deque<std::string> Streams::TakeEvents() { return std::exchange(events_, {}); }

Streams::Stream& Streams::FindStream(const json& request) {
  uint64_t id = static_cast<uint64_t>(
      RequireInteger(request, "stream", "stream", 0, std::numeric_limits<int64_t>::max()));
  auto it = streams_.find(id);
  if (it == streams_.end()) throw FieldError("stream", "no such stream (it ended)");
  return *it->second;
}

ordered_json Streams::Stat(const json& request) {
  RefuseUnknownFields(request, {"id", "op", "path"}, "");
  const std::string& path = RequirePath(request);
  struct stat st {};
  if (::stat(root_(path).c_str(), &st) != 0) FailPath("stat", path);
  return ordered_json{{"type", TypeOf(st.st_mode)}, {"size", st.st_size},
                      {"mode", st.st_mode & 07777}, {"uid", st.st_uid},
                      {"gid", st.st_gid},           {"mtime", st.st_mtim.tv_sec}};
}

ordered_json Streams::Handle(uint64_t id, const std::string& op, const json& request) {
  if (op == "stat") return Stat(request);
  if (op == "exec" || op == "read" || op == "write") {
    if (streams_.count(id) != 0) throw FieldError("id", "names a stream already running");
    auto stream = std::make_unique<Stream>();
    stream->id = id;
    ordered_json answer{{"stream", id}};
    if (op == "exec") {
      ExecRequest exec = ParseExec(request);
      Account account = LookUpAccount(root_, exec.user, "user");
      SpawnedProcess process = Spawn(exec, account);
      stream->kind = Stream::Kind::kExec;
      stream->pid = process.pid;
      stream->tty = exec.tty;
      stream->input = process.input;
      stream->output = process.output;
      stream->errors = process.errors;
      stream->takes_input = exec.stdin_open || exec.tty;
      if (exec.timeout_ms > 0) stream->deadline = Clock::now() + milliseconds(exec.timeout_ms);
      answer["pid"] = process.pid;
    } else if (op == "read") {
      RefuseUnknownFields(request, {"id", "op", "path"}, "");
      const std::string& path = RequirePath(request);
      int fd = ::open(root_(path).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
      if (fd < 0) FailPath("open", path);
      stream->file = fd;
      struct stat st {};
      if (::fstat(fd, &st) != 0) throw AgentError("path", ErrnoText("stat", path, errno));
      if (!S_ISREG(st.st_mode)) {
        throw FieldError("path", path + " is a " + TypeOf(st.st_mode) + ", not a file");
      }
      stream->kind = Stream::Kind::kRead;
      answer["size"] = st.st_size;
      answer["mode"] = st.st_mode & 07777;
      answer["uid"] = st.st_uid;
      answer["gid"] = st.st_gid;
    } else {
      RefuseUnknownFields(request, {"id", "op", "path", "mode", "owner"}, "");
      const std::string& path = RequirePath(request);
      stream->kind = Stream::Kind::kWrite;
      stream->mode = static_cast<mode_t>(OptionalInteger(request, "mode", 0, 07777, 0644));
      if (Find(request, "owner") != nullptr) {
        Account owner = LookUpAccount(root_, RequireString(request, "owner", "owner"), "owner");
        stream->uid = owner.uid;
        stream->gid = owner.gid;
      }
      stream->path = root_(path);
      stream->shown = path;
      struct stat st {};
      if (::stat(stream->path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        throw FieldError("path", path + " is a directory");
      }
      // Beside the file, so that the rename is atomic; never through a link.
      // (A name of its own length, whatever the file's: never past NAME_MAX.)
      std::string temp = stream->path.substr(0, stream->path.rfind('/') + 1) + ".ephemera-" +
                         std::to_string(id) + ".part";
      int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) FailPath("create", path);
      stream->file = fd;
      stream->temp = std::move(temp);
    }
    streams_[id] = std::move(stream);
    return answer;
  }

  if (op == "ack") {
    RefuseUnknownFields(request, {"id", "op", "stream", "bytes"}, "");
    auto bytes = static_cast<uint64_t>(RequireInteger(request, "bytes", "bytes", 0, 1LL << 50));
    // An ack may cross the stream's end on the way: nothing to do then.
    auto it = streams_.find(static_cast<uint64_t>(
        RequireInteger(request, "stream", "stream", 0, std::numeric_limits<int64_t>::max())));
    if (it != streams_.end()) it->second->unacked -= std::min(bytes, it->second->unacked);
    return ordered_json::object();
  }
  Stream& stream = FindStream(request);
  if (op == "signal") {
    RefuseUnknownFields(request, {"id", "op", "stream", "signal"}, "");
    int signal = static_cast<int>(RequireInteger(request, "signal", "signal", 1, 64));
    if (stream.kind != Stream::Kind::kExec) {
      End(stream, {{"error", "aborted by the host"}});  // a file: abandoned (and removed)
    } else if (!stream.exited) {
      ::kill(-stream.pid, signal);
    }
    return ordered_json::object();
  }
  if (op == "resize") {
    RefuseUnknownFields(request, {"id", "op", "stream", "rows", "cols"}, "");
    auto rows = static_cast<uint16_t>(RequireInteger(request, "rows", "rows", 1, 10000));
    auto cols = static_cast<uint16_t>(RequireInteger(request, "cols", "cols", 1, 10000));
    if (!stream.tty || stream.output < 0) throw FieldError("stream", "has no terminal");
    ResizeTerminal(stream.output, rows, cols);
    return ordered_json::object();
  }
  // input
  RefuseUnknownFields(request, {"id", "op", "stream", "data", "eof"}, "");
  std::string data;
  if (Find(request, "data") != nullptr) {
    std::optional<std::string> decoded = DecodeBase64(RequireString(request, "data", "data"));
    if (!decoded) throw FieldError("data", "is not base64");
    data = std::move(*decoded);
  }
  const bool eof = OptionalBool(request, "eof", false);
  if (stream.kind == Stream::Kind::kRead ||
      (stream.kind == Stream::Kind::kExec && !stream.takes_input)) {
    throw FieldError("stream", "takes no input");
  }
  if (stream.input_eof) throw FieldError("stream", "its input was closed");
  if (stream.pending.size() + data.size() > kMaxPendingInput) {
    throw FieldError("data", "more than 4 MiB of input waiting");
  }
  stream.input_eof = eof;
  if (stream.kind == Stream::Kind::kWrite) {
    std::string_view rest = data;
    while (!rest.empty()) {
      ssize_t n = ::write(stream.file, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        End(stream, {{"error", ErrnoText("write", stream.shown, err)}});
        return ordered_json::object();
      }
      rest.remove_prefix(static_cast<size_t>(n));
    }
    stream.size += data.size();
    if (!data.empty()) Emit({{"stream", stream.id}, {"written", data.size()}});
    if (eof) FinishWrite(stream);
    return ordered_json::object();
  }
  if (stream.input < 0) {
    // The process closed its stdin: what comes is dropped, but counted.
    if (!data.empty()) Emit({{"stream", stream.id}, {"written", data.size()}});
    return ordered_json::object();
  }
  stream.pending += data;
  WriteInput(stream);
  return ordered_json::object();
}

void Streams::FinishWrite(Stream& stream) {
  std::string failure;
  if (::fchown(stream.file, stream.uid, stream.gid) != 0) {
    failure = ErrnoText("chown", stream.temp, errno);
  } else if (::fchmod(stream.file, stream.mode) != 0) {  // after chown, which drops set-id bits
    failure = ErrnoText("chmod", stream.temp, errno);
  } else if (::close(std::exchange(stream.file, -1)) != 0) {
    failure = ErrnoText("write", stream.temp, errno);
  } else if (::rename(stream.temp.c_str(), stream.path.c_str()) != 0) {
    failure = ErrnoText("rename over", stream.path, errno);
  } else {
    stream.temp.clear();
  }
  if (!failure.empty()) {
    End(stream, {{"error", failure}});
  } else {
    End(stream, {{"size", stream.size}});
  }
}

void Streams::WriteInput(Stream& stream) {
  while (!stream.pending.empty() && stream.input >= 0) {
    ssize_t n = ::write(stream.input, stream.pending.data(), stream.pending.size());
    if (n > 0) {
      stream.pending.erase(0, static_cast<size_t>(n));
      Emit({{"stream", stream.id}, {"written", static_cast<uint64_t>(n)}});
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    // EPIPE: the process closed its stdin. The rest counts as written.
    Emit({{"stream", stream.id}, {"written", stream.pending.size()}});
    stream.pending.clear();
    CloseFd(stream.input);
  }
  // A terminal has no end of input but ^D, which is the program's to read.
  if (stream.pending.empty() && stream.input_eof && stream.input >= 0) {
    if (stream.tty) (void)!::write(stream.input, "\x04", 1);
    CloseFd(stream.input);
  }
}

void Streams::ReadOutput(Stream& stream, int& fd, const char* name) {
  std::string buffer(kChunk, '\0');
  ssize_t n = ::read(fd, buffer.data(), buffer.size());
  if (n > 0) {
    buffer.resize(static_cast<size_t>(n));
    stream.unacked += static_cast<uint64_t>(n);
    stream.last_output = Clock::now();
    EmitOutput(stream.id, name, buffer);
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  CloseFd(fd);  // end of output (EIO: a terminal whose last user left)
}

void Streams::AddPollFds(std::vector<pollfd>& fds) {
  polled_.clear();
  for (auto& [id, stream] : streams_) {
    if (stream->kind != Stream::Kind::kExec) continue;
    const bool room = stream->unacked < kWindow;
    if (room && stream->output >= 0) {
      fds.push_back({stream->output, POLLIN, 0});
      polled_.emplace_back(id, kOutput);
    }
    if (room && stream->errors >= 0) {
      fds.push_back({stream->errors, POLLIN, 0});
      polled_.emplace_back(id, kErrors);
    }
    if (!stream->pending.empty() && stream->input >= 0) {
      fds.push_back({stream->input, POLLOUT, 0});
      polled_.emplace_back(id, kInput);
    }
  }
}

void Streams::OnPolled(const std::vector<pollfd>& fds, size_t first) {
  for (size_t i = 0; i < polled_.size() && first + i < fds.size(); ++i) {
    if (fds[first + i].revents == 0) continue;
    auto it = streams_.find(polled_[i].first);
    if (it == streams_.end()) continue;
    Stream& stream = *it->second;
    switch (polled_[i].second) {
      case kOutput:
        if (stream.output >= 0) ReadOutput(stream, stream.output, "stdout");
        break;
      case kErrors:
        if (stream.errors >= 0) ReadOutput(stream, stream.errors, "stderr");
        break;
      default:
        WriteInput(stream);
    }
  }
  polled_.clear();
}

void Streams::Tick() {
  const auto now = Clock::now();
  std::vector<uint64_t> ids;
  for (const auto& [id, stream] : streams_) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    Stream& stream = *it->second;
    if (stream.kind == Stream::Kind::kRead) {
      std::string buffer(kChunk, '\0');
      while (stream.unacked < kWindow) {
        ssize_t n = ::read(stream.file, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          End(stream, {{"error", ErrnoText("read", "the file", errno)}});
          break;
        }
        if (n == 0) {
          End(stream, {{"size", stream.size}});
          break;
        }
        stream.unacked += static_cast<uint64_t>(n);
        stream.size += static_cast<uint64_t>(n);
        EmitOutput(id, "stdout", {buffer.data(), static_cast<size_t>(n)});
      }
      continue;
    }
    if (stream.kind != Stream::Kind::kExec) continue;
    if (!stream.exited && ::waitpid(stream.pid, &stream.status, WNOHANG) == stream.pid) {
      stream.exited = true;
      stream.exited_at = now;
    }
    if (!stream.exited && stream.deadline && now >= *stream.deadline) {
      ::kill(-stream.pid, SIGKILL);  // the whole group: its children too
      stream.timed_out = true;
      stream.deadline.reset();
    }
    if (!stream.exited) continue;
    const bool open = stream.output >= 0 || stream.errors >= 0;
    // Children that outlive the process may hold its pipes: give them a
    // moment, then stop listening (unless the host holds back the output).
    const auto quiet_since = std::max(stream.exited_at, stream.last_output);
    if (open && (stream.unacked >= kWindow || now - quiet_since < kDrainGrace)) continue;
    ordered_json end;
    if (WIFEXITED(stream.status)) {
      end["exit"] = WEXITSTATUS(stream.status);
    } else {
      end["signal"] = WTERMSIG(stream.status);
    }
    if (stream.timed_out) end["timed_out"] = true;
    End(stream, std::move(end));
  }
  std::erase_if(orphans_, [](pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) != 0; });
}

int Streams::PollTimeoutMs() const {
  const auto now = Clock::now();
  int64_t timeout = orphans_.empty() ? -1 : 1000;
  auto consider = [&](int64_t ms) {
    ms = std::max<int64_t>(ms, 0);
    if (timeout < 0 || ms < timeout) timeout = ms;
  };
  for (const auto& [id, stream] : streams_) {
    if (stream->kind == Stream::Kind::kRead && stream->unacked < kWindow) consider(0);
    if (stream->deadline)
      consider(duration_cast<milliseconds>(*stream->deadline - now).count() + 1);
    // A process may exit without a SIGCHLD reaching the loop first.
    if (stream->kind == Stream::Kind::kExec) consider(stream->exited ? 50 : 1000);
  }
  return static_cast<int>(timeout);
}

void Streams::End(Stream& stream, ordered_json end) {
  ordered_json event{{"stream", stream.id}, {"end", true}};
  for (auto& [key, value] : end.items()) event[key] = std::move(value);
  Emit(std::move(event));
  streams_.erase(stream.id);
}

void Streams::CloseAll() {
  for (auto& [id, stream] : streams_) {
    if (stream->kind == Stream::Kind::kExec && !stream->exited) {
      ::kill(-stream->pid, SIGKILL);
      orphans_.push_back(stream->pid);
    }
  }
  streams_.clear();  // closes descriptors, removes unfinished files
  events_.clear();
  Tick();
}

}  // namespace ephemera::agent

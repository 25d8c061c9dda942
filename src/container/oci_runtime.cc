#include "container/oci_runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "core/text.h"

namespace ephemera {

namespace fs = std::filesystem;

namespace {

// Waits for a spawned child with a deadline; its exit status, or kills it.
int WaitSpawned(const SpawnedProcess& child, std::chrono::milliseconds timeout,
                const std::string& what) {
  pollfd p{child.pidfd.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  if (ready == 0) ::kill(child.pid, SIGKILL);
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (ready == 0) Fail(ErrorCode::kTimeout, "{} did not finish in {} ms", what, timeout.count());
  return status;
}

}  // namespace

OciRuntime::OciRuntime(OciRuntimeOptions options) : options_(std::move(options)) {
  MakeDirs(options_.state_root, 0700);
}

std::vector<std::string> OciRuntime::Command(std::initializer_list<std::string> args) const {
  std::vector<std::string> argv = {options_.binary.string(), "--root",
                                   options_.state_root.string()};
  argv.insert(argv.end(), options_.global_args.begin(), options_.global_args.end());
  argv.insert(argv.end(), args);
  return argv;
}

SpawnSpec OciRuntime::ExecSpec(const std::string& id,
                               const std::vector<std::string>& options) const {
  SpawnSpec spec;
  spec.argv = Command({"exec"});
  spec.argv.insert(spec.argv.end(), options.begin(), options.end());
  spec.argv.push_back(id);
  spec.hidden_mounts = options_.hidden_mounts;
  return spec;
}

pid_t OciRuntime::Create(const std::string& id, const fs::path& bundle, int output_fd,
                         int output_reader, const std::vector<std::string>& cgroup_procs) {
  const fs::path pid_file = bundle / "init.pid";
  SpawnSpec spec;
  spec.argv = Command({"create", "--bundle", bundle.string(), "--pid-file", pid_file.string(), id});
  spec.fds = {{output_fd, 1}, {output_fd, 2}};
  spec.cgroup_procs = cgroup_procs;
  spec.hidden_mounts = options_.hidden_mounts;
  const SpawnedProcess child = Spawn(spec);
  const int status = WaitSpawned(child, options_.timeout, "the runtime's create");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // The runtime has exited: what it said waits in the pipe.
    std::string output(4096, '\0');
    const int flags = ::fcntl(output_reader, F_GETFL);
    ::fcntl(output_reader, F_SETFL, flags | O_NONBLOCK);
    const ssize_t n = ::read(output_reader, output.data(), output.size());
    ::fcntl(output_reader, F_SETFL, flags);
    output.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    Fail(ErrorCode::kUnavailable, "{} create {} failed (wait status {}); its output ends with: {}",
         options_.binary.filename().string(), id, status, EscapeForLog(output));
  }
  const std::string text = ReadFile(pid_file);
  try {
    const long pid = std::stol(text);
    if (pid <= 1) throw std::invalid_argument(text);
    return static_cast<pid_t>(pid);
  } catch (const std::exception&) {
    Fail(ErrorCode::kInternal, "{}: not a pid: '{}'", pid_file.string(), text.substr(0, 32));
  }
}

void OciRuntime::Start(const std::string& id) {
  ProcessResult r = RunProcess(Command({"start", id}), options_.timeout);
  if (!r.ok()) {
    Fail(ErrorCode::kUnavailable, "{} start {} failed: {}", options_.binary.filename().string(), id,
         EscapeForLog(r.err.substr(0, 2048)));
  }
}

void OciRuntime::Kill(const std::string& id, int signal) {
  ProcessResult r = RunProcess(Command({"kill", id, std::to_string(signal)}), options_.timeout);
  if (r.ok()) return;
  auto state = State(id);
  if (state && state->status != "stopped") {
    Fail(ErrorCode::kInternal, "{} kill {} failed: {}", options_.binary.filename().string(), id,
         EscapeForLog(r.err.substr(0, 2048)));
  }
}

void OciRuntime::Delete(const std::string& id) {
  ProcessResult r = RunProcess(Command({"delete", "--force", id}), options_.timeout);
  if (!r.ok() && State(id)) {
    Fail(ErrorCode::kInternal, "{} delete {} failed: {}", options_.binary.filename().string(), id,
         EscapeForLog(r.err.substr(0, 2048)));
  }
}

std::optional<OciState> OciRuntime::State(const std::string& id) {
  ProcessResult r = RunProcess(Command({"state", id}), options_.timeout);
  if (!r.ok()) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(r.out);
    return OciState{j.at("status").get<std::string>(), j.value("pid", 0)};
  } catch (const std::exception& e) {
    Fail(ErrorCode::kInternal, "{} state {}: unreadable answer: {}",
         options_.binary.filename().string(), id, e.what());
  }
}

std::vector<std::string> OciRuntime::List() {
  ProcessResult r = RunChecked(Command({"list", "--quiet"}));
  std::vector<std::string> ids;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) ids.push_back(line);
  }
  return ids;
}

}  // namespace ephemera

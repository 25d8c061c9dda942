// Running helper programs (qemu-img, qemu itself with -daemonize, ...) with
// captured output and a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/unique_fd.h"

namespace ephemera {

struct ProcessResult {
  int exit_code = -1;   // -1 when killed by a signal
  int term_signal = 0;  // the signal that ended it, or 0
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
};

// Runs argv[0] (a path, or a name looked up in PATH) to completion. Output is
// captured up to `max_output` bytes per stream; past the deadline the process
// is killed and kTimeout is thrown. A program that cannot be started throws
// kUnavailable naming it.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30),
                         std::size_t max_output = 1 << 20);

// RunProcess with more: bytes for its stdin (else /dev/null; the caller
// ignores SIGPIPE, as the daemon does), and a process group of its own that
// is killed whole when the program ends or times out (a hook's children too).
struct RunOptions {
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  std::size_t max_output = 1 << 20;
  std::optional<std::string> stdin_data;
  bool own_process_group = false;
};
ProcessResult RunProcess(const std::vector<std::string>& argv, const RunOptions& options);

// Like RunProcess, but a non-zero exit throws kInternal (or `code`) quoting
// the program's stderr.
ProcessResult RunChecked(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A long-lived child (QEMU) started with exactly the descriptors it is
// given, in cgroups, as an unprivileged user, in a session of its own.
// Both ends close-on-exec.
struct Pipe {
  UniqueFd read;
  UniqueFd write;
};
Pipe MakePipe();

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0]: a path, or a name looked up like FindProgram
  // (descriptor here, number in the child): everything else is closed; 0 is
  // /dev/null unless mapped.
  std::vector<std::pair<int, int>> fds;
  std::optional<uid_t> uid;  // with gid: drops to them (and only `groups`) before exec
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
  std::vector<std::string> cgroup_procs;  // cgroup.procs files the child joins before exec
  // Mount points detached in a mount namespace private to the child,
  // before exec (crun refuses a hybrid cgroup host while its v2 mount shows).
  std::vector<std::string> hidden_mounts;
};

struct SpawnedProcess {
  pid_t pid = 0;
  UniqueFd pidfd;  // pins the process; readable once it exits
};

// kUnavailable naming the program and the step that failed (a missing
// program, a cgroup that refused it, a uid switch), with nothing left running.
SpawnedProcess Spawn(const SpawnSpec& spec);

// Finds an executable by name in PATH plus the sbin directories (where
// dnsmasq and nft live even for users whose PATH lacks them).
std::optional<std::filesystem::path> FindProgram(const std::string& name);

}  // namespace ephemera

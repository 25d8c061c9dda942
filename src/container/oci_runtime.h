// The OCI runtime binary (crun, or runc) as the container driver uses it:
// create (namespaces and init, waiting before exec), start, kill, delete,
// state and list, all with the daemon's own state root (--root), never the
// runtime's default one.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/subprocess.h"

namespace ephemera {

struct OciRuntimeOptions {
  std::filesystem::path binary;      // resolved path of crun or runc
  std::filesystem::path state_root;  // --root: the runtime's records of our containers
  // Detached in the runtime's private mount namespace (the cgroup v2 mount
  // of a hybrid host, which crun refuses to run beside).
  std::vector<std::string> hidden_mounts;
  // Given before every command (crun: --cgroup-manager=disabled, as the
  // driver makes the cgroup and puts the runtime into it).
  std::vector<std::string> global_args;
  std::chrono::milliseconds timeout{30000};
};

struct OciState {
  std::string status;  // creating | created | running | stopped | paused
  pid_t pid = 0;
};

class OciRuntime {
 public:
  explicit OciRuntime(OciRuntimeOptions options);

  // Makes the container from `bundle` (its config.json) with its init
  // stopped before exec; the runtime process joins `cgroup_procs` first,
  // so the container starts inside its cgroup. The container's output
  // (and the runtime's errors) go to `output_fd`, a pipe whose read end is
  // `output_reader`. Returns the init's pid. kUnavailable quoting the
  // runtime's error.
  pid_t Create(const std::string& id, const std::filesystem::path& bundle, int output_fd,
               int output_reader, const std::vector<std::string>& cgroup_procs);
  void Start(const std::string& id);
  // Signals the init; a container already gone is fine.
  void Kill(const std::string& id, int signal);
  // Forgets it (killing what runs); an unknown id is fine.
  void Delete(const std::string& id);
  std::optional<OciState> State(const std::string& id);  // nullopt: unknown
  std::vector<std::string> List();

  // How to run `exec <options> <id>` (a process joining the container),
  // to be spawned by the caller: it streams that process's input and output.
  SpawnSpec ExecSpec(const std::string& id, const std::vector<std::string>& options) const;

  const std::filesystem::path& binary() const { return options_.binary; }

 private:
  std::vector<std::string> Command(std::initializer_list<std::string> args) const;

  OciRuntimeOptions options_;
};

}  // namespace ephemera

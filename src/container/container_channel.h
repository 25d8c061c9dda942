// GuestChannel into a running container, with no agent and no SSH:
// programs through the OCI runtime's exec (the container's own process
// spec, namespaces, cgroup and seccomp, another user and command), files
// through the container's root as its init sees it, every path resolved
// inside that root (openat2 RESOLVE_IN_ROOT), owned by the container's
// users as its uid map says.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "container/oci_runtime.h"
#include "core/cgroup.h"
#include "core/unique_fd.h"
#include "guest/guest_stream.h"

namespace ephemera {

struct ContainerAccess {
  std::string id;                          // the runtime's name for it
  pid_t init = 0;                          // its init, on the host
  std::shared_ptr<UniqueFd> init_pidfd;    // ... pinned: its pid is checked against it
  std::string pid_namespace;               // its init's /proc/PID/ns/pid link
  uid_t host_root = 0;                     // the host uid (and gid) of its root
  std::filesystem::path bundle;            // its config.json: the process spec execs start from
  std::filesystem::path scratch;           // the daemon's: process specs, consoles, pid files
  std::shared_ptr<const Cgroups> cgroups;  // where its cgroup is, which every exec joins
  std::string cgroup;
};

// A user of the container, from its /etc/passwd (or a bare uid).
struct ContainerUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  std::string home = "/";
};

// `user` (a name, or a number) in `passwd` (the container's file).
// kInvalidArgument ("no such user") when the container has none.
ContainerUser FindContainerUser(const std::string& passwd, const std::string& user);

class ContainerChannel : public GuestChannel {
 public:
  ContainerChannel(const OciRuntime& runtime, ContainerAccess access)
      : runtime_(runtime), access_(std::move(access)) {}

  std::shared_ptr<GuestStream> Exec(const GuestCommand& command,
                                    Clock::time_point deadline) override;
  GuestFileType Stat(const std::string& path, Clock::time_point deadline) override;
  std::shared_ptr<GuestStream> Read(const std::string& path, Clock::time_point deadline) override;
  std::shared_ptr<GuestStream> Write(const std::string& path, std::optional<mode_t> mode,
                                     const std::string& owner, Clock::time_point deadline) override;

 private:
  UniqueFd OpenRoot() const;
  // `path` below the container's root; kNotFound when it is not there.
  UniqueFd OpenInContainer(const std::string& path, int flags) const;
  ContainerUser User(int root, const std::string& user) const;

  const OciRuntime& runtime_;
  ContainerAccess access_;
};

}  // namespace ephemera

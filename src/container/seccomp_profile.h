// The containers' seccomp filter. A Docker/Podman-format profile is resolved
// for this host (x86_64, with its 32-bit x86 and x32 ABIs) and the container's
// capabilities, then compiled here with libseccomp, once: crun then loads the
// ready BPF (annotation run.oci.seccomp_bpf_data) instead of compiling the
// JSON at every start, which cost 18 ms a container
// (reference/containers-facts.md).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace ephemera {

// What a container's root may do: Podman's default_capabilities
// (containers.conf), as "CAP_..." names. Never CAP_SYS_ADMIN.
const std::vector<std::string>& DefaultContainerCapabilities();

struct SeccompProfile {
  // The runtime-spec linux.seccomp object for config.json: exactly the rules
  // compiled below (entries that do not apply here, entries with the default
  // action and unknown names left out), for a runtime that ignores the BPF.
  nlohmann::json oci;
  // The compiled filter, struct sock_filter[] as seccomp_export_bpf writes
  // it, in base64: the value of crun's run.oci.seccomp_bpf_data.
  std::string bpf_base64;
  std::size_t rules = 0;  // syscall names with a non-default action
  // Names libseccomp does not know (newer than it, or misspelt): skipped, as
  // crun skips them, since a profile lists syscalls of every kernel.
  std::vector<std::string> unknown_syscalls;
  // Names with a rule that libseccomp would silently override, so left out:
  // an unconditional rule wins over later unconditional ones and over every
  // conditional one for the same syscall. Podman's own profile allows setns,
  // then denies it without CAP_SYS_ADMIN: the denial never takes effect.
  std::vector<std::string> shadowed_syscalls;
};

// Reads a profile in Docker/Podman format (archMap; syscalls[] with names,
// action, errnoRet, args, includes {caps, arches, minKernel} and excludes
// {caps, arches}) or already in OCI form (architectures; no includes or
// excludes), keeps the entries that apply to x86_64 (Docker's "amd64"), the
// running kernel and `capabilities` (includes: all of its caps held;
// excludes: none of them), and compiles them. Throws kInvalidArgument naming
// `origin` and the entry for anything malformed or that libseccomp refuses.
// The result depends only on its inputs and the kernel: compile once, reuse.
SeccompProfile LoadSeccompProfile(std::string_view json_text, const std::string& origin,
                                  const std::vector<std::string>& capabilities);
SeccompProfile LoadSeccompProfileFile(const std::filesystem::path& file,
                                      const std::vector<std::string>& capabilities);

// The built-in profile: share/ephemera/seccomp.json, compiled into the binary.
std::string_view DefaultSeccompProfileJson();
SeccompProfile DefaultSeccompProfile(const std::vector<std::string>& capabilities);

}  // namespace ephemera

// The OCI runtime spec (config.json) of a container sandbox: what crun or
// runc is asked to build. Namespaces (user, pid, network, mount, uts, ipc,
// cgroup), the field's default capabilities, no_new_privs off (the guest
// contract's sudo), the OCI default masked and read-only paths, only the
// standard devices, and the seccomp profile. Limits are not in it: the
// driver puts the runtime into the sandbox's cgroup itself (one code path
// for cgroup v1, v2 and hybrid hosts).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ephemera {

// Where the guest contract's per-sandbox files appear inside: the path
// QEMU's fw_cfg gives them in a VM, so the image's own boot script
// (guest-credentials.sh) reads them unchanged.
inline constexpr char kGuestFilesInside[] = "/sys/firmware/qemu_fw_cfg/by_name/opt/ephemera";

struct RuntimeSpecInput {
  std::string hostname;
  std::filesystem::path rootfs;  // the overlay's mount point
  uid_t host_uid = 0;            // the container's root on the host
  unsigned uid_count = 65536;
  std::filesystem::path guest_files;  // bound read-only at kGuestFilesInside
  std::vector<std::string> capabilities;
  nlohmann::json seccomp;          // linux.seccomp (OCI form); null: none
  std::string seccomp_bpf_base64;  // the same, compiled (crun's annotation); empty: none
  // linux.cgroupsPath, for a runtime that must be told the cgroup to join
  // (runc); empty: none (crun, its cgroup manager disabled).
  std::string cgroups_path;
};

nlohmann::json BuildRuntimeSpec(const RuntimeSpecInput& input);

// What PID 1 of a container sandbox runs (sh -c): the image's own
// guest-credentials.sh (host key, endpoint key), then sshd in the
// foreground, which is then PID 1 and reaps what is orphaned inside.
const std::string& ContainerInitScript();

}  // namespace ephemera

// The mounts a container's root filesystem is made of: the image's ext4
// mounted read-only once, an idmapped clone of it per container (so that
// the image's root is the container's root, a host uid of its own), a
// tmpfs for what the container writes, and an overlay joining the two.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace ephemera {

// Mounts the ext4 file `image` read-only at `target` (a loop device that
// goes away with the mount). kInvalidArgument if it is not a mountable ext4.
void MountImageReadOnly(const std::filesystem::path& image, const std::filesystem::path& target);

// A user namespace mapping uids and gids 0..count-1 to host_base..; held
// by the returned descriptor (no process stays in it).
UniqueFd MakeUserNamespace(uid_t host_base, unsigned count);

// `source` (a mount point) cloned at `target` with its owners shifted as
// the namespace `userns_fd` maps them: host uid 0 shows as host_base.
void MountIdmapped(const std::filesystem::path& source, const std::filesystem::path& target,
                   int userns_fd);

// A tmpfs of at most `size_mib`, its root owned by uid:gid, mode 0755.
void MountTmpfs(const std::filesystem::path& target, unsigned size_mib, uid_t uid, gid_t gid);

// An overlay of upper (writable) on lower, with its work directory.
void MountOverlay(const std::filesystem::path& lower, const std::filesystem::path& upper,
                  const std::filesystem::path& work, const std::filesystem::path& target);

// Detaches the mount at `target` (lazily: a process still inside keeps its
// view until it ends); nothing mounted there is fine.
void Unmount(const std::filesystem::path& target);

// Mount points at or below `dir`, deepest first (for teardown and reconcile).
std::vector<std::filesystem::path> MountsUnder(const std::filesystem::path& dir);

}  // namespace ephemera

// Unix stream sockets by path: the daemon's ends of QEMU's QMP, console
// and agent sockets.
#pragma once

#include <filesystem>

#include "core/unique_fd.h"

namespace ephemera {

// A listening socket at `path` (a stale one is replaced), mode 0600.
UniqueFd ListenUnix(const std::filesystem::path& path);

// A connected socket, or an invalid UniqueFd with errno set when nobody
// listens there (yet). kInvalidArgument for a path too long for sun_path.
UniqueFd TryConnectUnix(const std::filesystem::path& path, bool nonblocking = false);

}  // namespace ephemera

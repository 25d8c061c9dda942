// `ephemera exec` and `ephemera cp`: programs and files in a sandbox's
// guest over the daemon's /v1 exec and files routes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cli/transport.h"

namespace ephemera::cli {

struct ExecOptions {
  std::vector<std::string> argv;
  bool tty = false;              // a terminal in the guest, this one in raw mode
  bool interactive = false;      // this process's stdin feeds the program's
  std::vector<std::string> env;  // NAME=value
  std::string cwd;
  std::string user;
  long long timeout_seconds = 0;
};

// A client to the sandbox's daemon, with the headers that act on it (its
// client token); one per call, since exec feeds stdin on a second connection.
using ClientMaker = std::function<ApiClient()>;

// Runs the program, its output on this process's stdout and stderr as it
// comes. Returns the status to exit with: the program's, 128 + a signal's
// number, 124 when its timeout killed it.
int RunExec(const ClientMaker& make_client, const Headers& token, const std::string& id,
            const ExecOptions& options);

// "ID:PATH" split; false when `text` names a local path.
bool SplitGuestPath(const std::string& text, std::string& id, std::string& path);

}  // namespace ephemera::cli

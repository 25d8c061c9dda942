// `ephemera exec` and `ephemera cp`: programs and files in a sandbox's
// guest over the daemon's /v1 exec and files routes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cli/api_client.h"

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

// Copies between this host (a file; "-" for stdout when reading) and a
// guest path. A guest folder comes as a tar; `tar` sends a local tar to be
// unpacked into the guest folder. A local file is written whole or not at all.
void CopyFromGuest(ApiClient& client, const Headers& token, const std::string& id,
                   const std::string& guest_path, const std::string& local);
void CopyToGuest(ApiClient& client, const Headers& token, const std::string& local,
                 const std::string& id, const std::string& guest_path, bool tar);

// Percent-encodes text for one path segment or query value.
std::string PathSegment(const std::string& text);

}  // namespace ephemera::cli

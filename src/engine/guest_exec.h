// Programs and files in a sandbox's guest, as the engine hands them out
// (exec.cc): the request, a running process, a transfer.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/sandbox_id.h"
#include "guest/guest_stream.h"

namespace ephemera {

struct ExecRequest {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;   // empty: the user's home
  std::string user;  // empty: the sandbox's client account
  bool tty = false;
  std::uint16_t rows = 24, cols = 80;
  std::int64_t timeout_seconds = 0;  // 0: none
  bool stdin_open = false;           // false: the process reads /dev/null
};

// A process running in a guest; it ends when the stream does.
struct GuestExec {
  explicit GuestExec(SandboxId in) : sandbox(std::move(in)) {}
  std::string id;  // 16 hex digits, for the stdin, resize and signal requests
  SandboxId sandbox;
  int pid = 0;
  bool tty = false;
  bool stdin_open = false;  // started to be fed (stdin true, or a terminal)
  std::shared_ptr<GuestStream> stream;
};

// A file or folder read from a guest: its bytes, or a tar of the folder.
struct GuestDownload {
  bool tar = false;
  std::optional<std::uint64_t> size;  // a file's
  std::shared_ptr<GuestStream> stream;
};

struct GuestUpload {
  std::string path;  // absolute, in the guest
  std::optional<mode_t> mode;
  std::string owner;  // empty: the sandbox's client account (root for an image without one)
  bool tar = false;   // a tar to unpack into the folder `path` (made if missing)
};

}  // namespace ephemera

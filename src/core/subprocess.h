// Running helper programs (qemu-img, qemu itself with -daemonize, ...) with
// captured output and a deadline.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

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

// Like RunProcess, but a non-zero exit throws kInternal (or `code`) quoting
// the program's stderr.
ProcessResult RunChecked(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Finds an executable by name in PATH plus the sbin directories (where
// dnsmasq and nft live even for users whose PATH lacks them).
std::optional<std::filesystem::path> FindProgram(const std::string& name);

}  // namespace ephemera

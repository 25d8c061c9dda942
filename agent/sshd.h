// Starting sshd, or making a running one reload, and knowing when it
// listens: a new listening socket on the port in /proc/net/tcp{,6} (sshd
// writes its pid file only after that, and only when it started).
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

namespace ephemera::agent {

struct SshdOptions {
  std::string binary = "/usr/sbin/sshd";
  std::string pid_file = "/run/sshd.pid";  // as the image's sshd_config says
  std::string privsep_dir = "/run/sshd";
  std::string proc_net = "/proc/net";
  std::string proc = "/proc";
  std::chrono::milliseconds timeout{10000};
};

// Throws std::runtime_error when sshd exits or does not listen in time.
void StartSshd(uint16_t port, const SshdOptions& options = {});

// Whether sshd (its pid file's process) runs and something listens on
// `port`, waiting up to options.timeout while an sshd process is starting.
bool AwaitSshd(uint16_t port, const SshdOptions& options = {});

// The socket inodes in LISTEN state (0A) on `port` in one /proc/net/tcp
// or tcp6 table.
std::set<uint64_t> ListeningInodes(std::string_view table, uint16_t port);

// Starts `argv` with /dev/null as stdin and stdout, `stderr_fd` (or
// /dev/null when -1) as stderr, default signal handling, a plain PATH.
// Returns the pid; throws on failure.
int Spawn(const char* const argv[], int stderr_fd = -1);
// The exit status of `pid` ("status 1", "signal 9"); empty for status 0.
std::string WaitFor(int pid);

}  // namespace ephemera::agent

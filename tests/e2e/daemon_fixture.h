// A real ephemerad (and the ephemera CLI) for end-to-end tests, run inside
// the test's private network namespace with its own state, socket and
// client config directory; everything is destroyed and stopped afterwards.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "e2e/http_client.h"
#include "unit/test_files.h"

namespace ephemera::test {

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A request to the local socket's API.
  CurlResult Api(const std::string& method, const std::string& path,
                 std::vector<std::string> extra = {});
  // An exec's answer (POST .../exec), stdout and stderr decoded from its
  // NDJSON events.
  struct ExecResult {
    std::string out, err;
    nlohmann::json exit;
  };
  ExecResult Exec(const std::string& id, const nlohmann::json& request);
  // What every sandbox's exec does, whatever carries it: both streams and
  // the status through the CLI, users, environment and folder, stdin
  // streamed and given whole, a terminal's size, a timeout that kills the
  // children too, and clear errors for bad requests.
  void ExpectExecsBehaveAsDockerExec(const std::string& id, const std::string& user);
  // 100 MiB of an exec's output reach the client while the daemon's peak
  // memory grows by less than 16 MiB.
  void ExpectLargeOutputStreamsInBoundedMemory(const std::string& id);
  // MIB MiB of random bytes up to /tmp (mode kept) and back down, their
  // SHA-256 the same on both sides; `user` checks it in the guest.
  void ExpectAFileRoundTrip(const std::string& id, unsigned mib, const std::string& user);
  // The daemon's peak resident memory (VmHWM), in KiB.
  long PeakMemoryKib() const;
  // An exec that times out is killed with the children it started.
  void ExpectATimeoutKillsTheWholeGroup(const std::string& id);

  // Extra YAML lines for the config (the defaults are fine for most tests).
  virtual std::string ExtraConfig() const { return ""; }
  // Extra keys of the vm: section, each with a leading ", ".
  virtual std::string VmConfig() const { return ""; }
  // Extra keys of the network: section, likewise.
  virtual std::string NetworkConfig() const { return ""; }
  // Where the daemon's image catalog is (the shared image cache by default).
  virtual std::filesystem::path ImageDirectory() const;
  // Extra ephemerad arguments (front doors, flags).
  virtual std::vector<std::string> ExtraArgs() const { return {}; }

  std::vector<std::string> Cli(std::vector<std::string> args) const;
  // Runs the CLI and returns its stdout; fails the test if it fails.
  std::string Output(const std::vector<std::string>& argv) const;
  void StartDaemon();
  void StopDaemon(int sig);
  nlohmann::json Create(const std::vector<std::string>& extra = {});  // ephemera create --json
  nlohmann::json List();
  std::string DaemonLog() const;
  // No QEMU, TAP, dnsmasq, listener, rule, clone or row is left.
  void ExpectNothingLeft();
  pid_t QemuPid(const std::string& id) const;
  // The state folder on a tmpfs of `size` ("160m"), private to the test's
  // mount namespace: for tests of a full disk. Call before SetUp, and
  // unmount after TearDown.
  void MountStateTmpfs(const std::string& size);
  void UnmountStateTmpfs();

  TempDir state_;
  std::filesystem::path socket_;
  std::filesystem::path config_;
  pid_t daemon_ = -1;
};

}  // namespace ephemera::test

// A test fixture that boots real default-image guests on real sandbox
// networks (TAP, dnsmasq, nftables, forward) under TCG. Use it only from
// NETNS tests: everything happens in the test's private network namespace.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "image/catalog.h"
#include "net/network_manager.h"
#include "unit/test_files.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera::test {

std::filesystem::path ImageDir();  // $EPHEMERA_IMAGE_DIR or the default cache

class GuestFixture : public ::testing::Test {
 protected:
  struct Guest {
    SandboxNetwork network;
    VmInfo vm;
  };

  void SetUp() override;
  void TearDown() override;
  // The sandbox network settings (forwards on loopback by default).
  virtual NetworkConfig Network() const;

  // Starts a guest whose endpoint user accepts `authorized_key` (a
  // public-key line), on a network of its own; with `host_key` (OpenSSH
  // private key), the guest's sshd uses that key instead of making one.
  Guest Boot(const std::string& authorized_key, const std::string& host_key = "");
  // Waits for the guest's sshd (its console marker).
  void WaitReady(const Guest& guest);

  TempDir state_;
  std::unique_ptr<NetworkManager> networks_;
  std::shared_ptr<const Cgroups> cgroups_;
  std::unique_ptr<QemuDriver> driver_;
  Image image_;
};

}  // namespace ephemera::test

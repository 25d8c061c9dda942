// The guest contract added to a distro-like tree at import: accounts,
// sudo rule, sshd, units, locked passwords, no image host keys, writes
// kept inside the tree even where the tree's symlinks point out.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "image/oci/guest_contract.h"
#include "unit/error_of.h"
#include "unit/test_files.h"

namespace ephemera::oci {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;
using ::testing::HasSubstr;

class GuestContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "root";
    outside_ = dir_.path() / "outside";
    for (const char* d : {"etc/ssh", "lib/systemd/system", "usr/bin", "bin", "root"}) {
      fs::create_directories(root_ / d);
    }
    fs::create_directories(outside_);
    Put("lib/systemd/systemd", "");
    Put("lib/systemd/system/ssh.service", "[Unit]\n");
    Put("usr/bin/sudo", "");
    Put("bin/bash", "");
    Put("etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n");
    Put("etc/shadow",
        "root:$6$salt$hash:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody::1:::::::\n");
    Put("etc/group", "root:x:0:\nendpointish:x:999:\n");
    Put("etc/sudoers", "root ALL=(ALL:ALL) ALL\n");
    Put("etc/hostname", "vm\n");
    Put("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    Put("etc/ssh/ssh_host_rsa_key", "SHARED");
    Put("etc/ssh/ssh_host_rsa_key.pub", "SHARED");
    ::chmod((root_ / "etc/shadow").c_str(), 0640);
    // A link the image points out of its root: followed inside it, never on the host.
    fs::create_symlink(outside_ / "hosts", root_ / "etc/hosts");
  }
  void Put(const std::string& path, const std::string& content) {
    test::WriteBytes(root_ / path, content);
  }
  std::string Get(const std::string& path) { return ReadFile(root_ / path); }

  test::TempDir dir_;
  fs::path root_, outside_;
};

TEST_F(GuestContractTest, ADistroTreeGetsTheContractAndKeepsNoSharedSecret) {
  EXPECT_EQ(AdoptGuestContract(root_, "oci:test"), GuestContract::kAdded);
  EXPECT_THAT(Get("etc/passwd"),
              HasSubstr("endpoint:x:998:998:ephemera endpoint:/home/endpoint:/bin/bash\n"));
  EXPECT_THAT(Get("etc/group"), HasSubstr("endpoint:x:998:\n"));
  // Every password locked (root's well-known one too), none made valid.
  const std::string shadow = Get("etc/shadow");
  EXPECT_THAT(shadow, HasSubstr("root:!:19000:"));
  EXPECT_THAT(shadow, HasSubstr("sshd:*:19000:"));
  EXPECT_THAT(shadow, HasSubstr("nobody:!:1:"));
  EXPECT_THAT(shadow, HasSubstr("endpoint:!:"));
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "etc/shadow").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  ASSERT_EQ(::stat((root_ / "home/endpoint").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 998u);

  EXPECT_EQ(Get("etc/sudoers.d/ephemera-endpoint").find("#"), 0u);
  EXPECT_THAT(Get("etc/sudoers.d/ephemera-endpoint"),
              HasSubstr("endpoint ALL=(root) NOPASSWD: /bin/anweddol_container_setup.sh\n"));
  EXPECT_THAT(Get("etc/sudoers"), HasSubstr("@includedir /etc/sudoers.d"));
  ASSERT_EQ(::stat((root_ / "bin/anweddol_container_setup.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_THAT(Get("etc/ssh/sshd_config"), HasSubstr("AllowUsers endpoint"));
  EXPECT_FALSE(fs::exists(root_ / "etc/ssh/ssh_host_rsa_key"));
  EXPECT_FALSE(fs::exists(root_ / "etc/ssh/ssh_host_rsa_key.pub"));
  EXPECT_EQ(Get("etc/machine-id"), "");
  EXPECT_EQ(
      fs::read_symlink(root_ / "etc/systemd/system/sysinit.target.wants/ephemera-guest.service"),
      "/etc/systemd/system/ephemera-guest.service");
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system/multi-user.target.wants/ssh.service"),
            "/lib/systemd/system/ssh.service");
  EXPECT_THAT(Get("usr/lib/ephemera/guest-credentials.sh"), HasSubstr("fw_cfg"));
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system/serial-getty@.service"), "/dev/null");
  // The host's side of the link was not touched; the tree got its own file.
  EXPECT_FALSE(fs::exists(outside_ / "hosts"));
  EXPECT_THAT(Get("etc/hosts"), HasSubstr("127.0.1.1\tvm\n"));

  // Twice: it is there now.
  EXPECT_EQ(AdoptGuestContract(root_, "oci:test"), GuestContract::kPresent);
}

TEST_F(GuestContractTest, WhatTheContractNeedsIsNamedWhenMissing) {
  fs::remove(root_ / "usr/bin/sudo");
  Error e = ErrorOf([&] { AdoptGuestContract(root_, "docker://r/x:1"); });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr("docker://r/x:1"));
  EXPECT_THAT(e.what(), HasSubstr("has no sudo"));
  Put("usr/bin/sudo", "");
  fs::remove(root_ / "lib/systemd/systemd");
  EXPECT_THAT(ErrorOf([&] { AdoptGuestContract(root_, "x"); }).what(), HasSubstr("has no systemd"));
  Put("lib/systemd/systemd", "");
  Put("etc/passwd", "endpoint:x:1000:1000::/home/endpoint:/bin/sh\n");
  EXPECT_THAT(ErrorOf([&] { AdoptGuestContract(root_, "x"); }).what(),
              HasSubstr("has an 'endpoint' account of its own"));
}

}  // namespace
}  // namespace ephemera::oci

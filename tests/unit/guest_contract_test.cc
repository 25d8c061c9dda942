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
    for (const char* d :
         {"etc/ssh", "etc/init.d", "lib/systemd/system", "usr/bin", "bin", "root", "var"}) {
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
    Put("etc/fstab", "# <file system> <mount point>\n\n  tmpfs /scratch tmpfs defaults 0 0\n");
    Put("etc/init.d/ssh", "#!/bin/sh\n");  // wrapped by its native ssh.service
    Put("etc/init.d/README", "");
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
  // The endpoint: '*' matches no password; only the key a boot puts in
  // ~/.ssh (made here, the endpoint's) will open it.
  EXPECT_THAT(shadow, HasSubstr("endpoint:*:"));
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "etc/shadow").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  ASSERT_EQ(::stat((root_ / "home/endpoint").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 998u);
  ASSERT_EQ(::stat((root_ / "home/endpoint/.ssh").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 998u);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_FALSE(fs::exists(root_ / "home/endpoint/.ssh/authorized_keys"));

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
  for (const char* masked :
       {"serial-getty@.service", "systemd-journal-flush.service", "systemd-random-seed.service",
        "sshd-keygen@.service", "modprobe@.service", "systemd-modules-load.service"}) {
    EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system" / masked), "/dev/null") << masked;
  }
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system-generators/systemd-gpt-auto-generator"),
            "/dev/null");
  // Generators with nothing to do here are off; those with work stay.
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system-generators/systemd-rc-local-generator"),
            "/dev/null");
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system-generators/systemd-sysv-generator"),
            "/dev/null");
  EXPECT_FALSE(fs::exists(root_ / "etc/systemd/system-generators/systemd-fstab-generator"));
  EXPECT_EQ(Get("etc/systemd/system/ssh.service.d/ephemera.conf").find("#"), 0u);
  EXPECT_THAT(Get("etc/systemd/system/ssh.service.d/ephemera.conf"),
              HasSubstr("[Service]\nExecStartPre=\n"));
  // systemd's update stamps carry /usr's time: ConditionNeedsUpdate= is false.
  struct stat usr {};
  ASSERT_EQ(::stat((root_ / "usr").c_str(), &usr), 0);
  for (const char* stamp : {"etc/.updated", "var/.updated"}) {
    ASSERT_EQ(::stat((root_ / stamp).c_str(), &st), 0) << stamp;
    EXPECT_EQ(st.st_mtim.tv_sec, usr.st_mtim.tv_sec) << stamp;
    EXPECT_EQ(st.st_mtim.tv_nsec, usr.st_mtim.tv_nsec) << stamp;
    EXPECT_THAT(Get(stamp),
                HasSubstr(fmt::format("\nTIMESTAMP_NSEC={}\n",
                                      usr.st_mtim.tv_sec * 1000000000LL + usr.st_mtim.tv_nsec)));
  }
  // The host's side of the link was not touched; the tree got its own file.
  EXPECT_FALSE(fs::exists(outside_ / "hosts"));
  EXPECT_THAT(Get("etc/hosts"), HasSubstr("127.0.1.1\tvm\n"));

  // Twice: it is there now.
  EXPECT_EQ(AdoptGuestContract(root_, "oci:test"), GuestContract::kPresent);
}

TEST_F(GuestContractTest, GeneratorsWithWorkInTheTreeStayOn) {
  Put("etc/fstab", "# only comments\n");
  Put("etc/rc.local", "#!/bin/sh\n");
  Put("etc/init.d/legacy-daemon", "#!/bin/sh\n");  // no native unit
  EXPECT_EQ(AdoptGuestContract(root_, "oci:test"), GuestContract::kAdded);
  const fs::path generators = root_ / "etc/systemd/system-generators";
  EXPECT_EQ(fs::read_symlink(generators / "systemd-fstab-generator"), "/dev/null");
  EXPECT_FALSE(fs::exists(generators / "systemd-rc-local-generator"));
  EXPECT_FALSE(fs::exists(generators / "systemd-sysv-generator"));
}

TEST_F(GuestContractTest, ModuleLoadsStayWhenTheTreeBootsItsOwnKernel) {
  EXPECT_EQ(AdoptGuestContract(root_, "oci:test", KernelModules::kInTree), GuestContract::kAdded);
  for (const char* unit : {"modprobe@.service", "systemd-modules-load.service"}) {
    EXPECT_FALSE(fs::exists(root_ / "etc/systemd/system" / unit)) << unit;
  }
  EXPECT_EQ(fs::read_symlink(root_ / "etc/systemd/system/serial-getty@.service"), "/dev/null");
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

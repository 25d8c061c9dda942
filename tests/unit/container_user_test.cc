// Users of a container as its exec and file channel finds them in the
// container's own /etc/passwd (container_channel.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "container/container_channel.h"
#include "core/error.h"
#include "unit/error_of.h"

namespace ephemera {
namespace {

using ::testing::HasSubstr;

const char* const kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "broken line\n"
    "toobig:x:70000:70000::/home/toobig:/bin/sh\n"
    "notanumber:x:abc:1::/home/x:/bin/sh\n"
    "alice:x:1000:1001:Alice:/home/alice:/bin/sh\n"
    "nohome:x:1002:1002:::/bin/sh\n";

TEST(ContainerUserTest, ANameOrAUidIsFoundWithItsGroupAndHome) {
  ContainerUser alice = FindContainerUser(kPasswd, "alice");
  EXPECT_EQ(alice.uid, 1000u);
  EXPECT_EQ(alice.gid, 1001u);
  EXPECT_EQ(alice.home, "/home/alice");
  ContainerUser by_uid = FindContainerUser(kPasswd, "1000");
  EXPECT_EQ(by_uid.name, "alice");
  EXPECT_EQ(by_uid.gid, 1001u);
  EXPECT_EQ(FindContainerUser(kPasswd, "nohome").home, "/");
}

TEST(ContainerUserTest, AUidWithoutALineAndRootWithoutAFileStillRun) {
  ContainerUser bare = FindContainerUser(kPasswd, "4242");
  EXPECT_EQ(bare.uid, 4242u);
  EXPECT_EQ(bare.gid, 4242u);
  EXPECT_EQ(bare.home, "/");
  ContainerUser root = FindContainerUser("", "root");
  EXPECT_EQ(root.uid, 0u);
  EXPECT_EQ(root.home, "/root");
}

TEST(ContainerUserTest, UnknownUsersAndIdsOutsideTheMapAreRefusedByName) {
  for (const char* user : {"mallory", "toobig", "notanumber", "70000", "", "99999999999"}) {
    Error e = test::ErrorOf([&] { FindContainerUser(kPasswd, user); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << user;
    EXPECT_THAT(e.what(), HasSubstr("no such user")) << user;
  }
}

}  // namespace
}  // namespace ephemera

// gtest main for tests that create network devices: the process moves into
// a private network namespace before anything else runs.
#include <gtest/gtest.h>

#include "integration/netns.h"

int main(int argc, char** argv) {
  ephemera::test::EnterPrivateNetworkNamespace();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// gtest main for tests that create network devices: the process moves into
// a private network namespace before anything else runs.
#include <gtest/gtest.h>

#include "integration/netns.h"

#include <signal.h>
#include <unistd.h>

namespace {

// Stopped from outside (ctest's timeout, an operator): the fixtures' teardown
// will not run, so what their daemons left goes here.
void OnStop(int signal) {
  ephemera::test::EndNamespaceOrphans();
  ::_exit(128 + signal);
}

}  // namespace

int main(int argc, char** argv) {
  ephemera::test::EnterPrivateNetworkNamespace();
  ::signal(SIGTERM, OnStop);
  ::signal(SIGINT, OnStop);
  ::testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  ephemera::test::EndNamespaceOrphans();
  return status;
}

#include "vm/libvirt/deferred_teardown.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>

namespace ephemera {
namespace {

using namespace std::chrono_literals;

TEST(DeferredTeardownTest, RunsEachStepOnceAndWaitIdleSeesItDone) {
  DeferredTeardown teardown;
  std::atomic<int> runs{0};
  SandboxId id = SandboxId::Generate();
  teardown.Add(id, [&] {
    std::this_thread::sleep_for(50ms);
    ++runs;
  });
  teardown.Add(id, [&] { runs += 100; });  // one is queued for it already
  EXPECT_TRUE(teardown.Pending(id));
  EXPECT_TRUE(teardown.WaitIdle(5s));
  EXPECT_FALSE(teardown.Pending(id));
  EXPECT_EQ(runs, 1);
}

TEST(DeferredTeardownTest, AFailingStepIsRetriedWithoutHoldingUpOthers) {
  DeferredTeardown teardown;
  std::atomic<int> attempts{0};
  std::atomic<bool> other_done{false};
  SandboxId failing = SandboxId::Generate();
  SandboxId other = SandboxId::Generate();
  teardown.Add(failing, [&] {
    if (++attempts < 3) throw std::runtime_error("libvirt away");
  });
  teardown.Add(other, [&] { other_done = true; });
  EXPECT_TRUE(teardown.WaitIdle(10s));
  EXPECT_EQ(attempts, 3);
  EXPECT_TRUE(other_done);
}

TEST(DeferredTeardownTest, WaitIdleTimesOutWhileAStepKeepsFailing) {
  std::atomic<bool> fail{true};
  {
    DeferredTeardown teardown;
    teardown.Add(SandboxId::Generate(), [&] {
      if (fail) throw std::runtime_error("still away");
    });
    EXPECT_FALSE(teardown.WaitIdle(300ms));
    fail = false;  // lets the destructor's drain finish it
  }
}

}  // namespace
}  // namespace ephemera

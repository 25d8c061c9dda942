#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "cli/remembered.h"
#include "unit/test_files.h"

namespace ephemera::cli {
namespace {

TEST(RememberedTest, SecretsLiveInA0600FileAndConcurrentWritersLoseNothing) {
  test::TempDir dir;
  auto file = dir.path() / "ephemera" / "sandboxes.json";
  std::vector<std::thread> writers;
  for (int i = 0; i < 8; ++i) {
    writers.emplace_back([&, i] {
      Remembered(file).Put("id-" + std::to_string(i), {{"password", "p"}});
    });
  }
  for (auto& t : writers) t.join();
  Remembered remembered(file);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(remembered.Get("id-" + std::to_string(i))) << i;
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(file.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  remembered.Forget("id-3");
  EXPECT_FALSE(remembered.Get("id-3"));
  EXPECT_TRUE(remembered.Get("id-4"));
}

}  // namespace
}  // namespace ephemera::cli

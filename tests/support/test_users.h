// Real, unprivileged Unix users and a group for tests of the wirt front
// door, with homes under a folder the test owns; removed (users, group,
// homes) when the object goes. Needs root.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ephemera::test {

struct TestUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::filesystem::path home;
};

class TestUsers {
 public:
  // Makes a group with a fresh name; homes go in `homes` (made 0755).
  explicit TestUsers(std::filesystem::path homes);
  ~TestUsers();
  TestUsers(const TestUsers&) = delete;
  TestUsers& operator=(const TestUsers&) = delete;

  const std::string& group() const { return group_; }
  // A new user (home 0755, theirs), a member of the group unless told not.
  TestUser Add(const std::string& suffix, bool member = true);
  void RemoveFromGroup(const TestUser& user);
  // Runs `sh -c script` as the user (their uid, gid and groups); returns
  // the exit status. Output goes to the test's stderr.
  int RunAs(const TestUser& user, const std::string& script) const;

 private:
  std::filesystem::path homes_;
  std::string group_;
  std::vector<std::string> users_;
};

}  // namespace ephemera::test

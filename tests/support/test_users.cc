#include "support/test_users.h"

#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "core/random.h"
#include "core/subprocess.h"

namespace ephemera::test {

namespace {

void Run(const std::vector<std::string>& argv) {
  ProcessResult r = RunProcess(argv);
  if (!r.ok()) {
    std::string command;
    for (const auto& a : argv) command += a + " ";
    throw std::runtime_error(command + "failed: " + r.err);
  }
}

}  // namespace

TestUsers::TestUsers(std::filesystem::path homes) : homes_(std::move(homes)) {
  group_ = "ewt" + RandomString(8, "abcdefghijklmnopqrstuvwxyz0123456789");
  std::filesystem::create_directories(homes_);
  std::filesystem::permissions(homes_, std::filesystem::perms(0755));
  // The path down to the homes must be traversable for the users.
  for (auto p = homes_.parent_path(); p != p.root_path(); p = p.parent_path()) {
    std::filesystem::permissions(p, std::filesystem::perms::others_exec,
                                 std::filesystem::perm_options::add);
  }
  Run({"groupadd", group_});
}

TestUsers::~TestUsers() {
  for (const auto& name : users_) RunProcess({"userdel", "-f", name});
  RunProcess({"groupdel", group_});
  std::error_code ec;
  std::filesystem::remove_all(homes_, ec);
}

TestUser TestUsers::Add(const std::string& suffix, bool member) {
  TestUser user;
  user.name = group_ + suffix;
  user.home = homes_ / user.name;
  std::vector<std::string> argv = {"useradd", "-M",      "-d", user.home.string(),
                                   "-s",      "/bin/sh", "-U"};
  if (member) {
    argv.push_back("-G");
    argv.push_back(group_);
  }
  argv.push_back(user.name);
  Run(argv);
  users_.push_back(user.name);
  struct passwd* pw = ::getpwnam(user.name.c_str());
  if (!pw) throw std::runtime_error("no passwd entry for " + user.name);
  user.uid = pw->pw_uid;
  user.gid = pw->pw_gid;
  std::filesystem::create_directory(user.home);
  if (::chown(user.home.c_str(), user.uid, user.gid) != 0) {
    throw std::runtime_error("chown " + user.home.string());
  }
  std::filesystem::permissions(user.home, std::filesystem::perms(0755));
  return user;
}

void TestUsers::RemoveFromGroup(const TestUser& user) { Run({"gpasswd", "-d", user.name, group_}); }

int TestUsers::RunAs(const TestUser& user, const std::string& script) const {
  // setpriv: exactly the user's ids, groups and a login's environment.
  std::string quoted;
  for (char c : script) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  std::string command =
      "cd " + user.home.string() + " && setpriv --reuid=" + std::to_string(user.uid) +
      " --regid=" + std::to_string(user.gid) +
      " --init-groups -- env -i HOME=" + user.home.string() + " USER=" + user.name +
      " LOGNAME=" + user.name + " PATH=/usr/local/bin:/usr/bin:/bin sh -c '" + quoted + "'";
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace ephemera::test

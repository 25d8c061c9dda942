#include "wirt/members.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <mutex>

namespace ephemera::wirt {

namespace {

bool InGroup(const struct passwd& pw, gid_t group) {
  if (pw.pw_gid == group) return true;
  int count = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(count));
  while (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &count) < 0) {
    groups.resize(static_cast<std::size_t>(count) + 16);
    count = static_cast<int>(groups.size());
  }
  groups.resize(static_cast<std::size_t>(count));
  return std::find(groups.begin(), groups.end(), group) != groups.end();
}

Member FromPasswd(const struct passwd& pw) {
  return {pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir ? pw.pw_dir : ""};
}

}  // namespace

std::optional<gid_t> GroupId(const std::string& group) {
  std::vector<char> buffer(16384);
  struct group gr {};
  struct group* found = nullptr;
  while (::getgrnam_r(group.c_str(), &gr, buffer.data(), buffer.size(), &found) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (!found) return std::nullopt;
  return found->gr_gid;
}

std::optional<Member> MemberByUid(uid_t uid, gid_t group) {
  if (uid == 0) return std::nullopt;
  std::vector<char> buffer(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  while (::getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &found) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (!found || !InGroup(*found, group)) return std::nullopt;
  return FromPasswd(*found);
}

std::vector<Member> Members(gid_t group) {
  // getpwent walks one process-wide cursor.
  static std::mutex cursor;
  std::lock_guard lock(cursor);
  std::vector<Member> members;
  ::setpwent();
  while (struct passwd* pw = ::getpwent()) {
    if (pw->pw_uid != 0 && InGroup(*pw, group)) members.push_back(FromPasswd(*pw));
  }
  ::endpwent();
  return members;
}

}  // namespace ephemera::wirt

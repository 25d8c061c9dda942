#include "wirt/members.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <map>
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
  std::map<uid_t, Member> members;
  // Supplementary members, as the group names them (NSS sources that do
  // not enumerate users, such as sssd's default, still list these).
  std::vector<char> buffer(16384);
  struct group gr {};
  struct group* found = nullptr;
  while (::getgrgid_r(group, &gr, buffer.data(), buffer.size(), &found) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (found) {
    for (char** name = found->gr_mem; name && *name; ++name) {
      std::vector<char> pw_buffer(16384);
      struct passwd pw {};
      struct passwd* user = nullptr;
      while (::getpwnam_r(*name, &pw, pw_buffer.data(), pw_buffer.size(), &user) == ERANGE) {
        pw_buffer.resize(pw_buffer.size() * 2);
      }
      if (user && user->pw_uid != 0) members.emplace(user->pw_uid, FromPasswd(*user));
    }
  }
  // Those whose primary group it is, and members the group entry does not
  // list (getgrouplist asks every source).
  {
    // getpwent walks one process-wide cursor.
    static std::mutex cursor;
    std::lock_guard lock(cursor);
    ::setpwent();
    while (struct passwd* pw = ::getpwent()) {
      if (pw->pw_uid != 0 && !members.count(pw->pw_uid) && InGroup(*pw, group)) {
        members.emplace(pw->pw_uid, FromPasswd(*pw));
      }
    }
    ::endpwent();
  }
  std::vector<Member> all;
  for (auto& [uid, m] : members) all.push_back(std::move(m));
  return all;
}

}  // namespace ephemera::wirt

// Who may use the wirt interface: the members of one group, primary or
// supplementary, as the system's user and group databases (NSS: files,
// LDAP, ...) say.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace ephemera::wirt {

struct Member {
  uid_t uid = 0;
  gid_t gid = 0;  // primary group
  std::string name;
  std::string home;
};

// The group's id; none if the group does not exist.
std::optional<gid_t> GroupId(const std::string& group);
// The user with this uid if the user is in `group`; root never is (root
// does not need the interface). None otherwise.
std::optional<Member> MemberByUid(uid_t uid, gid_t group);
// Every member that the user database enumerates.
std::vector<Member> Members(gid_t group);

}  // namespace ephemera::wirt

// The client's account, as the guest contract's setup script makes it
// (images/default/rootfs/usr/bin/anweddol_container_setup.sh): the same
// lines in /etc/passwd, shadow, group and gshadow, the same sudoers file,
// the endpoint locked, sshd moved to the client's port for that user only.
// Parsed here rather than through getpwnam(3): a static binary has no NSS.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/files.h"

namespace ephemera::agent {

// The account files, read once before anything changes.
struct AccountFiles {
  std::string passwd;
  std::string shadow;
  std::string group;
  std::optional<std::string> gshadow;  // not every root filesystem has one
};

AccountFiles ReadAccountFiles(const Root& root);

// Throws FieldError("user", ...) when `user` is taken: an account (even
// one in /etc/shadow only) or a group of that name.
void CheckNewUser(const AccountFiles& files, const std::string& user);

struct NewAccount {
  std::string user;
  std::string password_hash;
  std::vector<std::string> authorized_keys;
  int64_t days_since_epoch;  // shadow's "last changed"
};

struct AccountIds {
  uid_t uid;
  gid_t gid;
};

// The next free ids: above every uid (and gid) from 1000 to 59999, the
// gid equal to the uid unless a group has it.
AccountIds NextIds(const AccountFiles& files);

// Adds the account with its home, authorized_keys and sudo rule, and
// retires the endpoint account for good (locked password, nologin shell,
// no authorized_keys, /etc/ephemera/endpoint-retired).
AccountIds AddAccount(const Root& root, const AccountFiles& files, const NewAccount& account);

// sshd_config with its first Port and AllowUsers lines replaced (further
// ones dropped, absent ones appended), every other line kept.
std::string RewriteSshdConfig(std::string_view config, uint16_t port, std::string_view user);
void UpdateSshdConfig(const Root& root, uint16_t port, const std::string& user);

// A passwd, shadow or group line's ':'-separated fields.
std::vector<std::string> SplitFields(std::string_view line);

// A decimal id (digits only, no sign or space); nullopt otherwise.
std::optional<uint32_t> Number(std::string_view text);

// The lines of a text file, without their '\n'.
std::vector<std::string_view> SplitLines(std::string_view text);

}  // namespace ephemera::agent

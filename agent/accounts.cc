#include "agent/accounts.h"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include "agent/error.h"

namespace ephemera::agent {

namespace {

constexpr char kEndpoint[] = "endpoint";
constexpr char kNologin[] = "/usr/sbin/nologin";
constexpr uint32_t kFirstId = 1000;
constexpr uint32_t kIdLimit = 60000;  // Debian's system range starts above

std::string JoinFields(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) line += ':';
    line += fields[i];
  }
  return line;
}

std::string_view NameOf(std::string_view line) { return line.substr(0, line.find(':')); }

// The highest id from 1000 to 59999 in `field` of `file`, or 999.
uint32_t HighestId(std::string_view file, size_t field) {
  uint32_t highest = kFirstId - 1;
  for (std::string_view line : SplitLines(file)) {
    std::vector<std::string> fields = SplitFields(line);
    if (fields.size() <= field) continue;
    std::optional<uint32_t> id = Number(fields[field]);
    if (id && *id > highest && *id < kIdLimit) highest = *id;
  }
  return highest;
}

bool HasEntry(std::string_view file, std::string_view name) {
  for (std::string_view line : SplitLines(file)) {
    if (NameOf(line) == name) return true;
  }
  return false;
}

// Every line of `file` through `edit` (which may change its fields), then
// `added`; '\n' after each.
template <typename Edit>
std::string Rewrite(std::string_view file, Edit edit, const std::string& added) {
  std::string out;
  out.reserve(file.size() + added.size() + 2);
  for (std::string_view line : SplitLines(file)) {
    std::vector<std::string> fields = SplitFields(line);
    if (edit(fields)) {
      out += JoinFields(fields);
    } else {
      out += line;
    }
    out += '\n';
  }
  out += added;
  out += '\n';
  return out;
}

bool IsDirective(std::string_view line, std::string_view keyword) {
  size_t start = line.find_first_not_of(" \t");
  if (start == std::string_view::npos) return false;
  line.remove_prefix(start);
  return line.starts_with(keyword) && line.size() > keyword.size() &&
         (line[keyword.size()] == ' ' || line[keyword.size()] == '\t');
}

}  // namespace

std::vector<std::string> SplitFields(std::string_view line) {
  std::vector<std::string> fields;
  for (size_t start = 0;;) {
    size_t colon = line.find(':', start);
    fields.emplace_back(
        line.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  return fields;
}

std::optional<uint32_t> Number(std::string_view text) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    lines.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

AccountFiles ReadAccountFiles(const Root& root) {
  return AccountFiles{
      .passwd = ReadFile(root("/etc/passwd")),
      .shadow = ReadFile(root("/etc/shadow")),
      .group = ReadFile(root("/etc/group")),
      .gshadow = ReadFileIfExists(root("/etc/gshadow")),
  };
}

void CheckNewUser(const AccountFiles& files, const std::string& user) {
  if (HasEntry(files.passwd, user) || HasEntry(files.shadow, user)) {
    throw FieldError("user", "account " + user + " already exists");
  }
  if (HasEntry(files.group, user) || (files.gshadow && HasEntry(*files.gshadow, user))) {
    throw FieldError("user", user + " is the name of an existing group");
  }
}

AccountIds NextIds(const AccountFiles& files) {
  uint32_t uid = HighestId(files.passwd, 2) + 1;
  uint32_t gid = uid;
  for (std::string_view line : SplitLines(files.group)) {
    std::vector<std::string> fields = SplitFields(line);
    if (fields.size() > 2 && Number(fields[2]) == gid) {
      gid = HighestId(files.group, 2) + 1;
      break;
    }
  }
  return {uid, gid};
}

AccountIds AddAccount(const Root& root, const AccountFiles& files, const NewAccount& account) {
  const std::string& user = account.user;
  AccountIds ids = NextIds(files);
  std::string uid = std::to_string(ids.uid);
  std::string gid = std::to_string(ids.gid);
  std::string home = "/home/" + user;
  std::string endpoint_home = "/home/endpoint";

  std::string passwd = Rewrite(
      files.passwd,
      [&](std::vector<std::string>& fields) {
        if (fields[0] != kEndpoint || fields.size() < 7) return false;
        endpoint_home = fields[5];
        fields[6] = kNologin;
        return true;
      },
      user + ":x:" + uid + ":" + gid + "::" + home + ":/bin/bash");
  std::string shadow = Rewrite(
      files.shadow,
      [&](std::vector<std::string>& fields) {
        if (fields[0] != kEndpoint) return false;
        fields.resize(std::max<size_t>(fields.size(), 2));
        fields[1] = "!";
        return true;
      },
      user + ":" + account.password_hash + ":" + std::to_string(account.days_since_epoch) +
          ":0:99999:7:::");
  auto keep = [](std::vector<std::string>&) { return false; };
  std::string group = Rewrite(files.group, keep, user + ":x:" + gid + ":");

  // All written before any is renamed; groups before the accounts that name them.
  constexpr Ownership kAccountFile{0644, 0, 0};
  std::vector<std::pair<std::string, std::string>> staged;
  auto stage = [&](const char* path, const std::string& content) {
    staged.emplace_back(StageFile(root(path), content, kAccountFile), root(path));
  };
  stage("/etc/group", group);
  if (files.gshadow) stage("/etc/gshadow", Rewrite(*files.gshadow, keep, user + ":!::"));
  stage("/etc/passwd", passwd);
  stage("/etc/shadow", shadow);
  for (const auto& [from, to] : staged) CommitFile(from, to);

  MakeDir(root(home), {0750, ids.uid, ids.gid});
  if (!account.authorized_keys.empty()) {
    MakeDir(root(home + "/.ssh"), {0700, ids.uid, ids.gid});
    std::string keys;
    for (const std::string& key : account.authorized_keys) keys += key + "\n";
    ReplaceFile(root(home + "/.ssh/authorized_keys"), keys, {0600, ids.uid, ids.gid}, Keep::kNone);
  }

  // Full sudo with the user's own password; the line is valid for any name
  // the user check lets through.
  EnsureDir(root("/etc/sudoers.d"), 0755);
  ReplaceFile(root("/etc/sudoers.d/" + user), user + " ALL=(ALL:ALL) ALL\n", {0440, 0, 0},
              Keep::kNone);

  // The endpoint never logs in again, not even after a reboot (the boot's
  // guest-credentials.sh honours the marker).
  RemoveFile(root(endpoint_home + "/.ssh/authorized_keys"));
  EnsureDir(root("/etc/ephemera"), 0755);
  ReplaceFile(root("/etc/ephemera/endpoint-retired"), "", {0644, 0, 0});
  return ids;
}

std::string RewriteSshdConfig(std::string_view config, uint16_t port, std::string_view user) {
  std::string port_line = "Port " + std::to_string(port);
  std::string allow_line = "AllowUsers " + std::string(user);
  bool seen_port = false, seen_allow = false;
  std::string out;
  for (std::string_view line : SplitLines(config)) {
    if (IsDirective(line, "Port")) {
      if (!seen_port) out += port_line + "\n";
      seen_port = true;
    } else if (IsDirective(line, "AllowUsers")) {
      if (!seen_allow) out += allow_line + "\n";
      seen_allow = true;
    } else {
      out += line;
      out += '\n';
    }
  }
  if (!seen_port) out += port_line + "\n";
  if (!seen_allow) out += allow_line + "\n";
  return out;
}

void UpdateSshdConfig(const Root& root, uint16_t port, const std::string& user) {
  std::string path = root("/etc/ssh/sshd_config");
  ReplaceFile(path, RewriteSshdConfig(ReadFile(path), port, user), {0644, 0, 0});
}

}  // namespace ephemera::agent

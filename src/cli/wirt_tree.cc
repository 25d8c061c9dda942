#include "cli/wirt_tree.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/text.h"
#include "core/unique_fd.h"
#include "guest/credentials.h"
#include "wirt/layout.h"

namespace ephemera::wirt_cli {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxStatusBytes = 256 * 1024;

std::optional<timespec> MtimeOf(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st.st_mtim;
}

bool Same(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

// "2026-12-05T11:00:05Z" (fractions and offsets other than Z are not
// written by the daemon) as seconds since the epoch.
std::optional<std::time_t> ParseUtc(const std::string& text) {
  std::tm tm{};
  char zone = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &zone) < 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return ::timegm(&tm);
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  return text;
}

void AppendUtf8(std::string& out, unsigned long code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xc0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xe0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else if (code < 0x110000) {
    out += static_cast<char>(0xf0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  }
}

// XML's five entities and character references; anything else stays as
// written.
std::string XmlUnescape(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    std::size_t semicolon = text[i] == '&' ? text.find(';', i) : std::string_view::npos;
    if (semicolon == std::string_view::npos || semicolon - i > 10) {
      out += text[i];
      continue;
    }
    std::string_view entity = text.substr(i + 1, semicolon - i - 1);
    if (entity == "lt") {
      out += '<';
    } else if (entity == "gt") {
      out += '>';
    } else if (entity == "amp") {
      out += '&';
    } else if (entity == "quot") {
      out += '"';
    } else if (entity == "apos") {
      out += '\'';
    } else if (entity.size() > 1 && entity[0] == '#') {
      bool hex = entity[1] == 'x' || entity[1] == 'X';
      std::string digits(entity.substr(hex ? 2 : 1));
      char* end = nullptr;
      unsigned long code = std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
      if (digits.empty() || *end != '\0') {
        out += text[i];
        continue;
      }
      AppendUtf8(out, code);
    } else {
      out += text[i];
      continue;
    }
    i = semicolon;
  }
  return out;
}

// The first element `tag` of a small, flat document: its attribute text
// and (unless it is self-closing) its text up to the closing tag.
struct Element {
  std::string_view attributes;
  std::string_view text;
};

std::optional<Element> FindElement(std::string_view xml, std::string_view tag) {
  std::string open = "<" + std::string(tag);
  for (std::size_t pos = xml.find(open); pos != std::string_view::npos;
       pos = xml.find(open, pos + 1)) {
    std::size_t after = pos + open.size();
    if (after >= xml.size()) return std::nullopt;
    char next = xml[after];
    if (next != '>' && next != '/' && !std::isspace(static_cast<unsigned char>(next))) continue;
    std::size_t close = xml.find('>', after);
    if (close == std::string_view::npos) return std::nullopt;
    Element element;
    element.attributes = xml.substr(after, close - after);
    if (!element.attributes.empty() && element.attributes.back() == '/') return element;
    std::string end = "</" + std::string(tag) + ">";
    std::size_t end_pos = xml.find(end, close + 1);
    if (end_pos != std::string_view::npos)
      element.text = xml.substr(close + 1, end_pos - close - 1);
    return element;
  }
  return std::nullopt;
}

std::string Attribute(std::string_view attributes, std::string_view name) {
  std::string key = std::string(name) + "=\"";
  for (std::size_t pos = attributes.find(key); pos != std::string_view::npos;
       pos = attributes.find(key, pos + 1)) {
    if (pos > 0 && !std::isspace(static_cast<unsigned char>(attributes[pos - 1]))) continue;
    std::size_t start = pos + key.size();
    std::size_t end = attributes.find('"', start);
    if (end == std::string_view::npos) return "";
    return XmlUnescape(attributes.substr(start, end - start));
  }
  return "";
}

std::string ElementText(std::string_view xml, std::string_view tag) {
  auto element = FindElement(xml, tag);
  return element ? XmlUnescape(Trim(element->text)) : "";
}

// Daemon-written text as one printable line.
std::string Shown(const std::string& text) { return EscapeForLog(text, 1024); }

// Whether status.xml was written after the request: a later mtime, a
// rewrite within the same clock tick, or an <updated> in a later second.
bool WrittenAfter(const timespec& status_mtime, const VmStatus& status,
                  const PendingRequest& request) {
  if (Later(status_mtime, request.written)) return true;
  bool rewritten = !request.status_before || !Same(*request.status_before, status_mtime);
  if (rewritten && Same(status_mtime, request.written)) return true;
  auto updated = ParseUtc(status.updated);
  return updated && *updated > request.written.tv_sec;
}

// Whether the status's last request is this one (same action, not before it).
bool IsAboutRequest(const VmStatus& status, const PendingRequest& request) {
  if (status.last_action != request.file_name &&
      status.last_action != wirt::ActionName(request.action)) {
    return false;
  }
  auto at = ParseUtc(status.last_at);
  return !at || *at >= request.written.tv_sec;
}

bool EndsAction(const PendingRequest& request, std::string_view state) {
  if (state == "failed") return true;
  switch (request.action) {
    case Action::kStart:
    case Action::kAutostart:
      return state == "running";
    case Action::kShutdown:
    case Action::kDestroy:
      return state == "stopped";
  }
  return false;
}

std::optional<Answer> CheckAnswer(const Tree& tree, const PendingRequest& request) {
  struct stat st {};
  if (::lstat(request.path.c_str(), &st) == 0) return std::nullopt;  // not taken yet
  Answer answer;
  answer.request_taken = true;
  fs::path status_file = tree.StatusFile(request.name);
  std::optional<timespec> status_mtime = MtimeOf(status_file);
  if (status_mtime) answer.status = ReadStatus(tree, request.name);
  bool fresh = answer.status && WrittenAfter(*status_mtime, *answer.status, request);
  bool refused =
      fresh && IsAboutRequest(*answer.status, request) &&
      (answer.status->last_outcome == "failed" || answer.status->last_outcome == "rejected");
  if (request.action == Action::kAutostart && request.params.disable) {
    answer.outcome = refused ? Outcome::kFailed : Outcome::kDone;
    return answer;
  }
  if (!answer.status) {
    // A destroy may take the VM's info away with it.
    if (request.action == Action::kDestroy && request.status_before) {
      answer.outcome = Outcome::kDone;
      return answer;
    }
    return std::nullopt;
  }
  if (!fresh) return std::nullopt;
  if (refused) {
    answer.outcome = Outcome::kFailed;
    return answer;
  }
  if (!EndsAction(request, answer.status->state)) return std::nullopt;
  answer.outcome = answer.status->state == "failed" ? Outcome::kFailed : Outcome::kDone;
  return answer;
}

constexpr std::uint32_t kFolderEvents = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                        IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                        IN_ONLYDIR;
constexpr std::uint32_t kParentEvents = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR;

// Watches each folder, or while one does not exist its nearest existing
// parent (to notice it appear). False when some folder is missing, so that
// the caller polls too. Adding a watch twice is harmless: the kernel keeps
// one per inode, and a recreated folder gets a new one.
bool WatchFolders(int inotify_fd, const std::vector<fs::path>& folders, const fs::path& home) {
  bool all_watched = true;
  for (const fs::path& folder : folders) {
    if (::inotify_add_watch(inotify_fd, folder.c_str(), kFolderEvents) >= 0) continue;
    if (errno != ENOENT) FailErrno(fmt::format("cannot watch {}", folder.string()), errno);
    all_watched = false;
    for (fs::path parent = folder.parent_path();; parent = parent.parent_path()) {
      if (::inotify_add_watch(inotify_fd, parent.c_str(), kParentEvents | IN_MASK_ADD) >= 0) break;
      if (errno != ENOENT) FailErrno(fmt::format("cannot watch {}", parent.string()), errno);
      if (parent == home || parent == parent.parent_path()) {
        Fail(ErrorCode::kNotFound, "the home folder {} does not exist", home.string());
      }
    }
  }
  return all_watched;
}

void Drain(int inotify_fd) {
  alignas(inotify_event) char buffer[4096];
  while (::read(inotify_fd, buffer, sizeof buffer) > 0) {
  }
}

}  // namespace

fs::path HomeOfUser(uid_t uid) {
  long suggested = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(suggested > 0 ? static_cast<std::size_t>(suggested) : 16384);
  for (;;) {
    passwd entry{};
    passwd* found = nullptr;
    int err = ::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found);
    if (err == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (err != 0) FailErrno(fmt::format("cannot look up user {}", uid), err);
    if (!found || !entry.pw_dir || !*entry.pw_dir) {
      Fail(ErrorCode::kNotFound, "user {} has no home folder in the password database", uid);
    }
    return entry.pw_dir;
  }
}

fs::path Tree::ServiceDir(std::string_view name) const { return home_ / wirt::kServiceDir / name; }
fs::path Tree::InfoDir(std::string_view name) const { return home_ / wirt::kInfoDir / name; }
fs::path Tree::StatusFile(std::string_view name) const { return InfoDir(name) / wirt::kStatusFile; }
fs::path Tree::CredentialsFile(std::string_view name) const {
  return InfoDir(name) / wirt::kCredentialsFile;
}
fs::path Tree::LogFile(std::string_view name) const {
  return home_ / wirt::kLogDir / (std::string(name) + ".log");
}
fs::path Tree::OldLayoutDir(std::string_view name) const {
  return home_ / wirt::kOldRoot / (std::string(wirt::kOldVmPrefix) + std::string(name));
}

bool Tree::Knows(std::string_view name) const {
  std::error_code ec;
  return fs::is_directory(ServiceDir(name), ec) || fs::is_directory(InfoDir(name), ec) ||
         fs::is_directory(OldLayoutDir(name), ec);
}

std::vector<std::string> Tree::VmNames() const {
  std::set<std::string> names;
  auto scan = [&](const fs::path& folder, std::string_view prefix) {
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
      std::string entry = it->path().filename().string();
      if (!entry.starts_with(prefix)) continue;
      std::string name = entry.substr(prefix.size());
      std::error_code type_ec;
      if (wirt::IsValidVmName(name) && it->is_directory(type_ec) && !it->is_symlink(type_ec))
        names.insert(name);
    }
  };
  scan(home_ / wirt::kServiceDir, "");
  scan(home_ / wirt::kInfoDir, "");
  scan(home_ / wirt::kOldRoot, wirt::kOldVmPrefix);
  return {names.begin(), names.end()};
}

void MakeTreeDirs(const fs::path& home, const fs::path& relative) {
  fs::path current = home;
  for (const fs::path& part : relative) {
    current /= part;
    if (::mkdir(current.c_str(), 0755) == 0) {
      // Explicitly, whatever the umask was.
      if (::chmod(current.c_str(), 0755) != 0)
        FailErrno(fmt::format("cannot chmod 0755 {}", current.string()), errno);
      continue;
    }
    if (errno != EEXIST) FailErrno(fmt::format("cannot create {}", current.string()), errno);
    struct stat st {};
    if (::lstat(current.c_str(), &st) != 0)
      FailErrno(fmt::format("cannot check {}", current.string()), errno);
    if (!S_ISDIR(st.st_mode)) {
      Fail(ErrorCode::kFailedPrecondition,
           "{} is not a folder (a symlink or a file?); the daemon follows no symlinks in a wirt "
           "tree",
           current.string());
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && st.st_uid == ::geteuid() &&
        ::chmod(current.c_str(), st.st_mode & 07755) != 0) {
      FailErrno(fmt::format("cannot remove group and world write access from {}", current.string()),
                errno);
    }
  }
}

timespec WriteTreeFile(const fs::path& dir, std::string_view file_name, std::string_view content,
                       mode_t mode) {
  fs::path target = dir / file_name;
  fs::path temp = dir / fmt::format(".{}.tmp-{}", file_name, ::getpid());
  ::unlink(temp.c_str());  // a leftover of a crashed run that had our pid
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd) FailErrno(fmt::format("cannot create {}", temp.string()), errno);
  auto fail = [&](std::string_view what) {
    int err = errno;
    ::unlink(temp.c_str());
    FailErrno(fmt::format("cannot {} {}", what, target.string()), err);
  };
  for (std::size_t done = 0; done < content.size();) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    done += static_cast<std::size_t>(n);
  }
  struct stat st {};
  if (::fchmod(fd.get(), mode) != 0) fail("set the mode of");
  if (::fsync(fd.get()) != 0) fail("write");
  if (::fstat(fd.get(), &st) != 0) fail("check");
  fd.reset();
  if (::rename(temp.c_str(), target.c_str()) != 0) fail("store");
  return st.st_mtim;
}

std::optional<std::string> ReadTreeFile(const fs::path& path, std::size_t max_bytes) {
  // Non-blocking so that a FIFO planted in place of a file cannot hang us.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP) {
      Fail(ErrorCode::kFailedPrecondition, "{} is a symlink; refusing to follow it", path.string());
    }
    FailErrno(fmt::format("cannot open {}", path.string()), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) FailErrno(fmt::format("cannot check {}", path.string()), errno);
  if (!S_ISREG(st.st_mode)) {
    Fail(ErrorCode::kFailedPrecondition, "{} is not a regular file", path.string());
  }
  if (static_cast<std::size_t>(st.st_size) > max_bytes) {
    Fail(ErrorCode::kFailedPrecondition, "{} is larger than {} bytes", path.string(), max_bytes);
  }
  std::string content;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno(fmt::format("cannot read {}", path.string()), errno);
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > max_bytes) {
      Fail(ErrorCode::kFailedPrecondition, "{} is larger than {} bytes", path.string(), max_bytes);
    }
  }
  return content;
}

std::vector<std::string> ReadSshKeyArguments(const std::vector<std::string>& arguments) {
  std::vector<std::string> keys;
  for (const std::string& argument : arguments) {
    std::error_code ec;
    if (!fs::is_regular_file(argument, ec)) {
      try {
        CheckAuthorizedKey(argument);
      } catch (const Error& e) {
        throw e.WithContext(fmt::format("--ssh-key '{}' is neither a file nor a public key line",
                                        EscapeForLog(argument, 80)));
      }
      keys.push_back(argument);
      continue;
    }
    std::optional<std::string> content = ReadTreeFile(argument, wirt::kMaxConfigBytes);
    std::istringstream lines(content.value_or(""));
    std::string line;
    std::size_t before = keys.size();
    for (int number = 1; std::getline(lines, line); ++number) {
      std::string_view key = Trim(line);
      if (key.empty() || key.front() == '#') continue;
      try {
        CheckAuthorizedKey(key);
      } catch (const Error& e) {
        throw e.WithContext(fmt::format("{} line {}", argument, number));
      }
      keys.emplace_back(key);
    }
    if (keys.size() == before) {
      Fail(ErrorCode::kInvalidArgument, "--ssh-key {}: the file holds no public key", argument);
    }
  }
  return keys;
}

fs::path WriteVmConfig(const Tree& tree, std::string_view name, const VmConfig& config,
                       bool force) {
  wirt::CheckVmName(name);
  std::string json = wirt::VmConfigToJson(config);
  wirt::ParseVmConfig(json);  // the daemon's checks (ranges, key count), before anything is written
  fs::path dir = tree.ServiceDir(name);
  fs::path file = dir / wirt::kConfigFile;
  struct stat st {};
  if (!force && ::lstat(file.c_str(), &st) == 0) {
    Fail(ErrorCode::kAlreadyExists, "{} already exists (--force replaces it)", file.string());
  }
  MakeTreeDirs(tree.home(), fs::path(wirt::kServiceDir) / name);
  WriteTreeFile(dir, wirt::kConfigFile, json, 0644);
  return file;
}

PendingRequest WriteRequest(const Tree& tree, std::string_view name, std::string_view file_name,
                            std::string_view params_line) {
  wirt::CheckVmName(name);
  std::optional<Action> action = wirt::ParseActionFile(file_name);
  if (!action) {
    Fail(ErrorCode::kInvalidArgument,
         "'{}' is not a request (start, stop, shutdown, destroy, "
         "autostart)",
         EscapeForLog(file_name, 64));
  }
  PendingRequest request;
  request.name = name;
  request.file_name = file_name;
  request.action = *action;
  request.params = wirt::ParseActionParams(*action, params_line);
  std::string_view line = Trim(params_line);
  std::string content = line.empty() ? "" : std::string(line) + "\n";
  request.status_before = MtimeOf(tree.StatusFile(name));
  request.credentials_before = MtimeOf(tree.CredentialsFile(name));
  MakeTreeDirs(tree.home(), fs::path(wirt::kServiceDir) / name);
  request.path = tree.ServiceDir(name) / file_name;
  request.written = WriteTreeFile(tree.ServiceDir(name), file_name, content, 0644);
  return request;
}

VmStatus ParseStatusXml(std::string_view xml) {
  VmStatus status;
  if (auto vm = FindElement(xml, "vm")) {
    status.name = Attribute(vm->attributes, "name");
    status.owner = Attribute(vm->attributes, "owner");
    status.uid = Attribute(vm->attributes, "uid");
  }
  status.state = ElementText(xml, "state");
  status.autostart = ElementText(xml, "autostart");
  status.sandbox = ElementText(xml, "sandbox");
  status.image = ElementText(xml, "image");
  status.address = ElementText(xml, "address");
  if (auto ssh = FindElement(xml, "ssh")) {
    status.ssh_host = Attribute(ssh->attributes, "host");
    status.ssh_port = Attribute(ssh->attributes, "port");
    status.ssh_username = Attribute(ssh->attributes, "username");
  }
  status.created = ElementText(xml, "created");
  status.expires = ElementText(xml, "expires");
  status.updated = ElementText(xml, "updated");
  if (auto last = FindElement(xml, "last_request")) {
    status.last_action = Attribute(last->attributes, "action");
    status.last_outcome = Attribute(last->attributes, "outcome");
    status.last_at = Attribute(last->attributes, "at");
    status.last_message = XmlUnescape(Trim(last->text));
  }
  return status;
}

std::optional<VmStatus> ReadStatus(const Tree& tree, std::string_view name) {
  std::optional<std::string> xml = ReadTreeFile(tree.StatusFile(name), kMaxStatusBytes);
  if (!xml) return std::nullopt;
  return ParseStatusXml(*xml);
}

nlohmann::json StatusToJson(const VmStatus& s) {
  nlohmann::json j = nlohmann::json::object();
  auto put = [&](const char* key, const std::string& value) {
    if (!value.empty()) j[key] = value;
  };
  put("name", s.name);
  put("owner", s.owner);
  if (!s.uid.empty() && s.uid.find_first_not_of("0123456789") == std::string::npos &&
      s.uid.size() < 10) {
    j["uid"] = std::stoul(s.uid);
  }
  put("state", s.state);
  if (s.autostart == "yes" || s.autostart == "no") j["autostart"] = s.autostart == "yes";
  put("sandbox", s.sandbox);
  put("image", s.image);
  put("address", s.address);
  if (!s.ssh_host.empty()) {
    nlohmann::json ssh = {{"host", s.ssh_host}};
    if (!s.ssh_port.empty() && s.ssh_port.size() < 6 &&
        s.ssh_port.find_first_not_of("0123456789") == std::string::npos) {
      ssh["port"] = std::stoul(s.ssh_port);
    }
    if (!s.ssh_username.empty()) ssh["username"] = s.ssh_username;
    j["ssh"] = ssh;
  }
  put("created", s.created);
  put("expires", s.expires);
  put("updated", s.updated);
  if (!s.last_action.empty()) {
    j["last_request"] = {{"action", s.last_action},
                         {"outcome", s.last_outcome},
                         {"at", s.last_at},
                         {"message", s.last_message}};
  }
  return j;
}

std::string SshSummary(const VmStatus& s) {
  if (s.ssh_host.empty()) return "-";
  std::string summary = s.ssh_username.empty() ? "" : s.ssh_username + "@";
  summary += s.ssh_host;
  if (!s.ssh_port.empty()) summary += " -p " + s.ssh_port;
  return Shown(summary);
}

std::string FormatStatus(const VmStatus& s) {
  std::string out = fmt::format("{}: {}\n", Shown(s.name), s.state.empty() ? "-" : Shown(s.state));
  auto line = [&](const char* label, const std::string& value) {
    if (!value.empty()) out += fmt::format("  {:<13} {}\n", label, Shown(value));
  };
  line("autostart", s.autostart);
  if (!s.ssh_host.empty()) out += fmt::format("  {:<13} {}\n", "ssh", SshSummary(s));
  line("address", s.address);
  line("image", s.image);
  line("sandbox", s.sandbox);
  line("created", s.created);
  line("expires", s.expires);
  line("updated", s.updated);
  if (!s.last_action.empty()) {
    std::string last = s.last_action + " " + (s.last_outcome.empty() ? "?" : s.last_outcome);
    if (!s.last_at.empty()) last += " at " + s.last_at;
    if (!s.last_message.empty()) last += ": " + s.last_message;
    line("last request", last);
  }
  return out;
}

Answer WaitForAnswer(const Tree& tree, const PendingRequest& request,
                     std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  UniqueFd inotify(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify) FailErrno("cannot wait for the daemon's answer: inotify_init1", errno);
  const std::vector<fs::path> folders = {tree.InfoDir(request.name), tree.ServiceDir(request.name)};
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    // Watch before looking, so nothing written in between goes unnoticed.
    bool all_watched = WatchFolders(inotify.get(), folders, tree.home());
    if (std::optional<Answer> answer = CheckAnswer(tree, request)) return *answer;
    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      Answer answer;
      answer.request_taken = !MtimeOf(request.path);
      answer.status = ReadStatus(tree, request.name);
      return answer;
    }
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    if (!all_watched) wait = std::min(wait, std::chrono::milliseconds(100));
    pollfd ready{inotify.get(), POLLIN, 0};
    int waited = ::poll(&ready, 1, static_cast<int>(std::min<long long>(wait.count(), 1 << 30)));
    if (waited < 0 && errno != EINTR) FailErrno("cannot wait for the daemon's answer: poll", errno);
    Drain(inotify.get());
  }
}

}  // namespace ephemera::wirt_cli

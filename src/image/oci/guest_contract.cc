#include "image/oci/guest_contract.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <set>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/text.h"
#include "core/unique_fd.h"
#include "guest_contract_files.h"
#include "image/oci/layer_reader.h"

namespace ephemera::oci {

namespace fs = std::filesystem;

namespace {

constexpr char kSetupPath[] = "bin/anweddol_container_setup.sh";
constexpr std::size_t kMaxAccountFile = 4 << 20;

// File operations on the tree, every path resolved inside it.
class Tree {
 public:
  Tree(const fs::path& root, std::string what) : what_(std::move(what)) {
    root_.reset(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_) FailErrno("cannot open " + root.string(), errno);
  }

  bool Exists(const std::string& path) const {
    UniqueFd fd(OpenInRoot(root_.get(), path, O_PATH));
    return static_cast<bool>(fd);
  }
  // The first of `paths` that exists, or "".
  std::string FirstOf(std::initializer_list<const char*> paths) const {
    for (const char* p : paths) {
      if (Exists(p)) return p;
    }
    return "";
  }

  std::string Read(const std::string& path) const {
    return ReadInRoot(root_.get(), path, kMaxAccountFile, what_);
  }

  // Replaces `path` (a symlink there is replaced, not followed) with a
  // root-owned file of `mode`.
  void Write(const std::string& path, std::string_view content, mode_t mode) const {
    auto [dir, name] = Parent(path);
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
      FailErrno(what_ + ": cannot replace /" + path, errno, ErrorCode::kFailedPrecondition);
    }
    UniqueFd fd(::openat(dir.get(), name.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd) FailErrno(what_ + ": cannot write /" + path, errno);
    for (std::size_t done = 0; done < content.size();) {
      ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
      if (n < 0) FailErrno(what_ + ": cannot write /" + path, errno);
      done += static_cast<std::size_t>(n);
    }
    if (::fchown(fd.get(), 0, 0) != 0 || ::fchmod(fd.get(), mode) != 0) {
      FailErrno(what_ + ": cannot set the mode of /" + path, errno);
    }
  }

  // Keeps the file's mode and owner (shadow files are not world-readable).
  void Rewrite(const std::string& path, std::string_view content) const {
    struct stat st {};
    {
      UniqueFd fd(OpenInRoot(root_.get(), path, O_RDONLY));
      if (!fd || ::fstat(fd.get(), &st) != 0) FailErrno(what_ + ": cannot stat /" + path, errno);
    }
    Write(path, content, st.st_mode & 07777);
    auto [dir, name] = Parent(path);
    if (::fchownat(dir.get(), name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
      FailErrno(what_ + ": cannot restore the owner of /" + path, errno);
    }
  }

  struct stat Stat(const std::string& path) const {
    struct stat st {};
    UniqueFd fd(OpenInRoot(root_.get(), path, O_PATH));
    if (!fd || ::fstat(fd.get(), &st) != 0) FailErrno(what_ + ": cannot stat /" + path, errno);
    return st;
  }

  void SetModified(const std::string& path, const timespec& when) const {
    auto [dir, name] = Parent(path);
    const timespec times[2] = {when, when};
    if (::utimensat(dir.get(), name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      FailErrno(what_ + ": cannot set the time of /" + path, errno);
    }
  }

  void Remove(const std::string& path) const {
    auto [dir, name] = Parent(path);
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
      FailErrno(what_ + ": cannot remove /" + path, errno);
    }
  }

  void Symlink(const std::string& path, const std::string& target) const {
    auto [dir, name] = Parent(path);
    if (::unlinkat(dir.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
      FailErrno(what_ + ": cannot replace /" + path, errno);
    }
    if (::symlinkat(target.c_str(), dir.get(), name.c_str()) != 0) {
      FailErrno(what_ + ": cannot link /" + path, errno);
    }
  }

  // Creates `path` and its parents (mode, owner for the last one).
  void MakeDir(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) const {
    std::string done;
    std::istringstream parts(path);
    for (std::string part; std::getline(parts, part, '/');) {
      if (part.empty()) continue;
      UniqueFd parent(OpenInRoot(root_.get(), done, O_PATH | O_DIRECTORY));
      if (!parent) FailErrno(what_ + ": cannot open /" + done, errno);
      done += (done.empty() ? "" : "/") + part;
      if (::mkdirat(parent.get(), part.c_str(), 0755) != 0 && errno != EEXIST) {
        FailErrno(what_ + ": cannot make /" + done, errno);
      }
    }
    auto [dir, name] = Parent(path);
    if (::fchownat(dir.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fchmodat(dir.get(), name.c_str(), mode, 0) != 0) {
      FailErrno(what_ + ": cannot set the mode of /" + path, errno);
    }
  }

  std::vector<std::string> List(const std::string& path) const {
    return ListInRoot(root_.get(), path);
  }

 private:
  std::pair<UniqueFd, std::string> Parent(const std::string& path) const {
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
    UniqueFd fd(OpenInRoot(root_.get(), dir, O_PATH | O_DIRECTORY));
    if (!fd) {
      if (errno == ENOENT) {
        MakeDir(dir, 0755);
        fd.reset(OpenInRoot(root_.get(), dir, O_PATH | O_DIRECTORY));
      }
      if (!fd) FailErrno(what_ + ": cannot open /" + dir, errno);
    }
    return {std::move(fd), path.substr(slash == std::string::npos ? 0 : slash + 1)};
  }

  UniqueFd root_;
  std::string what_;
};

std::vector<std::vector<std::string>> ParseColonFile(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (;;) {
      auto colon = line.find(':', start);
      fields.push_back(line.substr(start, colon - start));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    rows.push_back(std::move(fields));
  }
  return rows;
}

std::string JoinColonFile(const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  for (const auto& fields : rows) {
    for (std::size_t i = 0; i < fields.size(); ++i) out += (i ? ":" : "") + fields[i];
    out += "\n";
  }
  return out;
}

// A system uid (and gid of the same number) free in both files.
unsigned FreeSystemId(const std::vector<std::vector<std::string>>& passwd,
                      const std::vector<std::vector<std::string>>& group) {
  std::set<std::string> used;
  for (const auto& row : passwd) {
    if (row.size() > 3) used.insert(row[2]);
  }
  for (const auto& row : group) {
    if (row.size() > 2) used.insert(row[2]);
  }
  for (unsigned id = 999; id >= 900; --id) {
    if (!used.count(std::to_string(id))) return id;
  }
  Fail(ErrorCode::kFailedPrecondition, "no free system uid in 900-999 for the endpoint account");
}

void AddAccount(const Tree& tree, const std::string& what) {
  auto passwd = ParseColonFile(tree.Read("etc/passwd"));
  auto shadow = ParseColonFile(tree.Read("etc/shadow"));
  auto group = ParseColonFile(tree.Read("etc/group"));
  for (const auto& row : passwd) {
    if (!row.empty() && row[0] == "endpoint") {
      Fail(ErrorCode::kFailedPrecondition,
           "{}: the root filesystem has an 'endpoint' account of its own; ephemera's guest "
           "contract needs that name",
           what);
    }
  }
  // No password of the image stays valid: a well-known one (root:root)
  // would open every sandbox made from it.
  for (auto& row : shadow) {
    if (row.size() > 1 && !row[1].starts_with('!') && !row[1].starts_with('*')) row[1] = "!";
  }
  const unsigned id = FreeSystemId(passwd, group);
  const std::string ids = std::to_string(id);
  const std::string shell = tree.Exists("bin/bash") ? "/bin/bash" : "/bin/sh";
  passwd.push_back({"endpoint", "x", ids, ids, "ephemera endpoint", "/home/endpoint", shell});
  // '*': no password matches, and the key each boot puts in place works;
  // until then there is none. (Boot sets '!' when none was handed in.)
  shadow.push_back(
      {"endpoint", "*", std::to_string(::time(nullptr) / 86400), "0", "99999", "7", "", "", ""});
  group.push_back({"endpoint", "x", ids, ""});
  tree.Rewrite("etc/passwd", JoinColonFile(passwd));
  tree.Rewrite("etc/shadow", JoinColonFile(shadow));
  tree.Rewrite("etc/group", JoinColonFile(group));
  if (tree.Exists("etc/gshadow")) {
    auto gshadow = ParseColonFile(tree.Read("etc/gshadow"));
    gshadow.push_back({"endpoint", "!", "", ""});
    tree.Rewrite("etc/gshadow", JoinColonFile(gshadow));
  }
  tree.MakeDir("home", 0755);
  tree.MakeDir("home/endpoint", 0750, id, id);
  // Where each boot puts the sandbox's key (sshd reads it as the endpoint).
  tree.MakeDir("home/endpoint/.ssh", 0700, id, id);
}

// The machine's name must resolve from /etc/hosts: sudo looks it up, and a
// sandbox's DNS may be unreachable (each lookup then waits for timeouts).
// Container images have no /etc/hosts of their own (the runtime mounts one).
void ResolvableHostname(const Tree& tree) {
  std::string name;
  if (tree.Exists("etc/hostname")) {
    std::istringstream in(tree.Read("etc/hostname"));
    std::getline(in, name);
  }
  bool ok = !name.empty() && name.size() <= 63;
  for (char c : name) {
    ok = ok &&
         ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-');
  }
  if (!ok) {
    name = "sandbox";
    tree.Write("etc/hostname", name + "\n", 0644);
  }
  std::string hosts = tree.Exists("etc/hosts") ? tree.Read("etc/hosts") : "";
  if (!hosts.empty() && !hosts.ends_with('\n')) hosts += "\n";
  if (hosts.find("localhost") == std::string::npos) hosts += "127.0.0.1\tlocalhost\n";
  hosts += "127.0.1.1\t" + name + "\n";
  tree.Write("etc/hosts", hosts, 0644);
}

// systemd runs its update units (sysusers, ldconfig, hwdb, the journal
// catalog) at a boot whose /etc or /var is older than /usr
// (ConditionNeedsUpdate=). The stamps systemd-update-done leaves, written
// here as it writes them, say the tree is as its packages left it: no
// sandbox spends its boot redoing that.
void MarkUpdated(const Tree& tree) {
  if (!tree.Exists("usr")) return;
  const struct stat usr = tree.Stat("usr");
  for (const char* dir : {"etc", "var"}) {
    if (!tree.Exists(dir)) continue;
    const std::string stamp = std::string(dir) + "/.updated";
    tree.Write(stamp,
               fmt::format(
                   "# This file was created by ephemera's import, as "
                   "systemd-update-done writes it.\nTIMESTAMP_NSEC={}\n",
                   static_cast<long long>(usr.st_mtim.tv_sec) * 1000000000LL + usr.st_mtim.tv_nsec),
               0644);
    tree.SetModified(stamp, usr.st_mtim);
  }
}

// Generators that would find nothing in this tree: fstab's with no entry
// in /etc/fstab, rc.local's without /etc/rc.local, SysV's when every
// script in /etc/init.d has a native unit of its name (the generator wraps
// only the others). Each is a program systemd runs before its first unit.
std::vector<std::string> IdleGenerators(const Tree& tree) {
  std::vector<std::string> idle;
  bool fstab_entries = false;
  if (tree.Exists("etc/fstab")) {
    std::istringstream lines(tree.Read("etc/fstab"));
    for (std::string line; std::getline(lines, line);) {
      const auto first = line.find_first_not_of(" \t");
      if (first != std::string::npos && line[first] != '#') fstab_entries = true;
    }
  }
  if (!fstab_entries) idle.push_back("systemd-fstab-generator");
  if (!tree.Exists("etc/rc.local")) idle.push_back("systemd-rc-local-generator");
  bool unwrapped_script = false;
  for (const std::string& script : tree.List("etc/init.d")) {
    if (script == "README" || script == "skeleton" || script.starts_with('.')) continue;
    const std::string unit = script + ".service";
    if (!tree.Exists("etc/systemd/system/" + unit) && !tree.Exists("lib/systemd/system/" + unit) &&
        !tree.Exists("usr/lib/systemd/system/" + unit)) {
      unwrapped_script = true;
    }
  }
  if (!unwrapped_script) idle.push_back("systemd-sysv-generator");
  return idle;
}

// Enables a unit as `systemctl enable` would for its WantedBy target.
void Enable(const Tree& tree, const std::string& target, const std::string& unit_path) {
  const std::string unit = unit_path.substr(unit_path.rfind('/') + 1);
  tree.Symlink("etc/systemd/system/" + target + ".wants/" + unit, "/" + unit_path);
}

}  // namespace

GuestContract AdoptGuestContract(const fs::path& root, const std::string& what,
                                 KernelModules modules) {
  Tree tree(root, what);
  if (tree.Exists(kSetupPath) || tree.Exists("usr/bin/anweddol_container_setup.sh")) {
    return GuestContract::kPresent;
  }
  auto need = [&](std::initializer_list<const char*> paths, const std::string& why) {
    std::string found = tree.FirstOf(paths);
    if (found.empty()) {
      Fail(ErrorCode::kFailedPrecondition,
           "{}: the root filesystem lacks the guest contract (/bin/anweddol_container_setup.sh) "
           "and {}",
           what, why);
    }
    return found;
  };
  need({"lib/systemd/systemd", "usr/lib/systemd/systemd"},
       "has no systemd (/lib/systemd/systemd) to add it to");
  need({"usr/bin/sudo"},
       "has no sudo (/usr/bin/sudo), which the contract hands the sandbox over with");
  const std::string sshd_unit =
      need({"lib/systemd/system/ssh.service", "usr/lib/systemd/system/ssh.service",
            "lib/systemd/system/sshd.service", "usr/lib/systemd/system/sshd.service"},
           "has no ssh.service or sshd.service");

  AddAccount(tree, what);
  ResolvableHostname(tree);
  tree.Write(kSetupPath, kSetupScript, 0755);
  tree.Write("usr/lib/ephemera/guest-credentials.sh", kCredentialsScript, 0755);
  tree.MakeDir("etc/sudoers.d", 0755);
  tree.Write("etc/sudoers.d/ephemera-endpoint",
             "# ephemera's guest contract: the endpoint account hands the sandbox over.\n"
             "endpoint ALL=(root) NOPASSWD: /bin/anweddol_container_setup.sh\n",
             0440);
  if (tree.Exists("etc/sudoers")) {
    std::string sudoers = tree.Read("etc/sudoers");
    if (sudoers.find("includedir /etc/sudoers.d") == std::string::npos) {
      tree.Rewrite("etc/sudoers", sudoers + "\n@includedir /etc/sudoers.d\n");
    }
  }

  // sshd: ephemera's configuration; the image's host keys are shared by
  // every copy of it, so none is kept.
  std::string sshd_config = kSshdConfig;
  if (!tree.Exists("usr/lib/openssh/sftp-server") &&
      tree.Exists("usr/libexec/openssh/sftp-server")) {
    const std::string from = "/usr/lib/openssh/sftp-server";
    sshd_config.replace(sshd_config.find(from), from.size(), "/usr/libexec/openssh/sftp-server");
  }
  tree.Write("etc/ssh/sshd_config", sshd_config, 0644);
  for (const std::string& name : tree.List("etc/ssh")) {
    if (name.starts_with("ssh_host_")) tree.Remove("etc/ssh/" + name);
  }

  tree.Write("etc/systemd/system/ephemera-guest.service", kGuestUnit, 0644);
  Enable(tree, "sysinit.target", "etc/systemd/system/ephemera-guest.service");
  Enable(tree, "multi-user.target", sshd_unit);
  // What a sandbox reached over SSH has no use for, and what delays its
  // boot under emulation (each costs it 0.5 to 1.5 s of the one vCPU; so
  // do the generators below, run before the first unit starts):
  //   - console logins (every password is locked; a serial getty without
  //     udev waits 90 s for its device) and apt's timers (no network to
  //     reach a mirror);
  //   - the journal flush (the journal is volatile: the disk is gone at
  //     destroy), the random seed (each sandbox's disk is a fresh copy: no
  //     seed carries over) and utmp's boot records (nobody reboots a sandbox);
  //   - the root's remount (the initrd mounts it read-write) and the
  //     hugetlbfs and mqueue mounts (debugfs and tracefs stay: kernel tests
  //     read them);
  //   - module loads, when the kernel comes from another image (its
  //     modules are not in the root filesystem);
  //   - Fedora's sshd-keygen (RSA and ECDSA keys sshd is not configured to use).
  if (modules == KernelModules::kElsewhere) {
    for (const char* unit : {"modprobe@.service", "systemd-modules-load.service"}) {
      tree.Symlink(std::string("etc/systemd/system/") + unit, "/dev/null");
    }
  }
  for (const char* unit :
       {"getty@.service", "serial-getty@.service", "getty-static.service", "apt-daily.timer",
        "apt-daily-upgrade.timer", "e2scrub_reap.service", "systemd-journal-flush.service",
        "systemd-random-seed.service", "systemd-update-utmp.service",
        "systemd-update-utmp-runlevel.service", "systemd-remount-fs.service", "dev-hugepages.mount",
        "dev-mqueue.mount", "sshd-keygen@.service", "sshd-keygen.target"}) {
    tree.Symlink(std::string("etc/systemd/system/") + unit, "/dev/null");
  }
  // Generators for what a sandbox has not: encrypted, integrity or verity
  // volumes, GPT auto-mounts, hibernation, offline updates, boot counting,
  // gettys (masked above), and units asked for on the kernel command line
  // (systemd.run=, systemd.mask=: ephemera writes that line); then those
  // with nothing to do in this tree (fstab, SysV scripts, rc.local).
  for (const char* generator :
       {"systemd-cryptsetup-generator", "systemd-integritysetup-generator",
        "systemd-veritysetup-generator", "systemd-gpt-auto-generator",
        "systemd-hibernate-resume-generator", "systemd-system-update-generator",
        "systemd-bless-boot-generator", "systemd-getty-generator", "systemd-run-generator",
        "systemd-debug-generator"}) {
    tree.Symlink(std::string("etc/systemd/system-generators/") + generator, "/dev/null");
  }
  for (const std::string& generator : IdleGenerators(tree)) {
    tree.Symlink("etc/systemd/system-generators/" + generator, "/dev/null");
  }
  // sshd's configuration is ephemera's, and the setup script changes only
  // its Port and AllowUsers lines, to values it checks: the unit's own
  // check before each start (sshd -t) is a second sshd run on the way to
  // the first login.
  const std::string sshd_unit_name = sshd_unit.substr(sshd_unit.rfind('/') + 1);
  tree.Write("etc/systemd/system/" + sshd_unit_name + ".d/ephemera.conf",
             "# ephemera: sshd_config is ephemera's own; no check before each start.\n"
             "[Service]\nExecStartPre=\n",
             0644);
  MarkUpdated(tree);
  tree.Write("etc/systemd/journald.conf.d/ephemera.conf",
             "# ephemera: a sandbox's disk is gone at destroy; keep the journal in memory.\n"
             "[Journal]\nStorage=volatile\n",
             0644);
  // Each sandbox gets its own machine id at boot.
  if (tree.Exists("etc/machine-id")) tree.Write("etc/machine-id", "", 0444);
  tree.MakeDir("etc/ephemera", 0755);
  tree.Write("etc/ephemera/guest-contract",
             "Added by ephemera when this root filesystem was imported.\n", 0644);
  return GuestContract::kAdded;
}

}  // namespace ephemera::oci

#include "core/cgroup.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"

namespace ephemera {

namespace fs = std::filesystem;

namespace {

// The controllers ephemera uses, by the name a v1 mount or /proc/self/cgroup gives.
const std::set<std::string> kV1Controllers = {"memory", "pids", "cpu", "cpuacct", "blkio"};
const std::vector<std::string> kV2Controllers = {"memory", "pids", "cpu", "io"};

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, sep)) parts.push_back(part);
  return parts;
}

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Writes `value` to a control file; false if the file does not exist here
// (a controller this hierarchy lacks). Any other failure throws.
bool WriteControl(const fs::path& file, const std::string& value) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return false;
  std::ofstream out(file);
  out << value;
  out.flush();
  if (!out) {
    Fail(ErrorCode::kInternal, "cannot write '{}' to {}: {}", value, file.string(),
         std::strerror(errno));
  }
  return true;
}

std::optional<std::string> ReadControl(const fs::path& file) {
  try {
    return ReadFile(file);
  } catch (const Error&) {
    return std::nullopt;
  }
}

// "key value" lines (memory.events, cpu.stat, memory.oom_control).
std::uint64_t KeyedValue(const std::string& text, const std::string& key) {
  std::stringstream in(text);
  std::string k;
  std::uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

std::uint64_t NumberIn(const std::optional<std::string>& text) {
  if (!text) return 0;
  try {
    return std::stoull(*text);
  } catch (const std::exception&) {
    return 0;
  }
}

struct Mount {
  fs::path point;
  fs::path root;  // the mount's root within the hierarchy
  std::set<std::string> controllers;
};

// The daemon's path in a hierarchy, as a directory under its mount.
fs::path OwnDirectory(const Mount& mount, const std::string& own) {
  std::string relative = own;
  std::string root = mount.root.string();
  if (root != "/" && relative.rfind(root, 0) == 0) relative = relative.substr(root.size());
  return mount.point / fs::path(relative).relative_path();
}

void MakeDir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    FailErrno(fmt::format("cannot create cgroup {}", dir.string()), errno);
  }
}

}  // namespace

std::string Cgroups::SubtreeFor(const fs::path& state_dir) {
  fs::path normal = fs::absolute(state_dir).lexically_normal();
  if (normal == "/var/lib/ephemera" || normal == "/var/lib/ephemera/") return "ephemera";
  return "ephemera-" + Sha256Hex(normal.string()).substr(0, 12);
}

Cgroups::Cgroups(bool unified, std::vector<fs::path> bases)
    : unified_(unified), bases_(std::move(bases)) {}

void Cgroups::Record(const fs::path& file) const {
  std::string text = unified_ ? "v2\n" : "v1\n";
  for (const auto& base : bases_) text += base.string() + "\n";
  WriteFileAtomic(file, text, 0600);
}

Cgroups Cgroups::FromRecord(const fs::path& file) {
  if (!fs::exists(file)) return Cgroups(false, {});
  std::istringstream lines(ReadFile(file));
  std::string version, line;
  std::getline(lines, version);
  if (version != "v1" && version != "v2") {
    Fail(ErrorCode::kInvalidArgument, "{}: not a cgroup record", file.string());
  }
  std::vector<fs::path> bases;
  while (std::getline(lines, line)) {
    const fs::path base = line;
    if (!base.is_absolute() || base.lexically_normal() != base ||
        !line.starts_with("/sys/fs/cgroup/")) {
      Fail(ErrorCode::kInvalidArgument, "{}: '{}' is not a cgroup folder", file.string(),
           line.substr(0, 200));
    }
    bases.push_back(base);
  }
  return Cgroups(version == "v2", std::move(bases));
}

Cgroups Cgroups::Discover(const std::string& subtree) {
  std::vector<Mount> v1;
  std::optional<Mount> v2;
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto before = Split(line.substr(0, dash), ' ');
    auto after = Split(line.substr(dash + 3), ' ');
    if (before.size() < 5 || after.size() < 3) continue;
    Mount m{before[4], before[3], {}};
    if (after[0] == "cgroup2") {
      v2 = m;
    } else if (after[0] == "cgroup") {
      for (const auto& option : Split(after[2], ',')) {
        if (kV1Controllers.count(option)) m.controllers.insert(option);
      }
      if (!m.controllers.empty()) v1.push_back(m);
    }
  }
  std::map<std::string, std::string> own_v1;  // controller -> path
  std::string own_v2 = "/";
  std::ifstream self("/proc/self/cgroup");
  while (std::getline(self, line)) {
    auto first = line.find(':');
    auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (line.substr(0, first) == "0" && controllers.empty()) own_v2 = path;
    for (const auto& c : Split(controllers, ',')) own_v1[c] = path;
  }

  const bool has_v1_memory = std::any_of(
      v1.begin(), v1.end(), [](const Mount& m) { return m.controllers.count("memory") > 0; });
  if (has_v1_memory) {
    // v1 (or hybrid): one base per hierarchy holding a controller we use.
    std::vector<fs::path> bases;
    for (const auto& m : v1) {
      const std::string& any = *m.controllers.begin();
      fs::path base = OwnDirectory(m, own_v1.count(any) ? own_v1[any] : "/") / subtree;
      MakeDirs(base, 0755);
      bases.push_back(base);
    }
    return Cgroups(false, std::move(bases));
  }
  if (!v2) {
    Fail(
        ErrorCode::kUnavailable,
        "no cgroup hierarchy with a memory controller is mounted (looked in /proc/self/mountinfo)");
  }
  fs::path own = OwnDirectory(*v2, own_v2);
  std::set<std::string> available;
  for (const auto& c : Split(Trimmed(ReadControl(own / "cgroup.controllers").value_or("")), ' ')) {
    available.insert(c);
  }
  if (!available.count("memory")) {
    Fail(ErrorCode::kUnavailable,
         "the cgroup v2 memory controller is not delegated to ephemerad's cgroup {} (under "
         "systemd: Delegate=yes in the unit)",
         own.string());
  }
  std::string enable;
  for (const auto& c : kV2Controllers) {
    if (available.count(c)) enable += (enable.empty() ? "+" : " +") + c;
  }
  // "No internal processes": a cgroup that delegates controllers may hold
  // no process itself (the root excepted), so the daemon moves to a leaf.
  if (own != v2->point) {
    fs::path leaf = own / "daemon";
    MakeDir(leaf);
    WriteControl(leaf / "cgroup.procs", std::to_string(::getpid()));
  }
  try {
    WriteControl(own / "cgroup.subtree_control", enable);
    fs::path base = own / subtree;
    MakeDir(base);
    WriteControl(base / "cgroup.subtree_control", enable);
    return Cgroups(true, {base});
  } catch (const Error& e) {
    throw Error(ErrorCode::kUnavailable,
                fmt::format("cannot delegate cgroup controllers under {} (other processes in "
                            "that cgroup?): {}",
                            own.string(), e.what()));
  }
}

std::vector<std::string> Cgroups::Create(const std::string& name,
                                         const CgroupLimits& limits) const {
  std::vector<std::string> procs;
  for (const auto& base : bases_) {
    fs::path dir = base / name;
    MakeDir(dir);
    if (limits.memory_bytes) {
      std::string bytes = std::to_string(*limits.memory_bytes);
      if (unified_) {
        WriteControl(dir / "memory.max", bytes);
        WriteControl(dir / "memory.swap.max", "0");
      } else if (WriteControl(dir / "memory.limit_in_bytes", bytes)) {
        // memsw exists only with swap accounting; it must not be below the
        // memory limit, which was just set.
        try {
          WriteControl(dir / "memory.memsw.limit_in_bytes", bytes);
        } catch (const Error&) {
        }
      }
    }
    if (limits.pids) WriteControl(dir / "pids.max", std::to_string(*limits.pids));
    if (limits.cpus) {
      const auto quota = static_cast<long long>(std::llround(*limits.cpus * 100000));
      if (unified_) {
        WriteControl(dir / "cpu.max", fmt::format("{} 100000", quota));
      } else if (WriteControl(dir / "cpu.cfs_period_us", "100000")) {
        WriteControl(dir / "cpu.cfs_quota_us", std::to_string(quota));
      }
    }
    if (limits.io_weight) {
      unsigned w = std::clamp(*limits.io_weight, 1u, 10000u);
      if (unified_) {
        WriteControl(dir / "io.weight", fmt::format("default {}", w));
      } else {
        // Only with a proportional I/O scheduler; absent otherwise.
        unsigned v1 = std::clamp(w / 10, 10u, 1000u);
        if (!WriteControl(dir / "blkio.weight", std::to_string(v1))) {
          WriteControl(dir / "blkio.bfq.weight", std::to_string(v1));
        }
      }
    }
    procs.push_back((dir / "cgroup.procs").string());
  }
  return procs;
}

std::vector<std::string> Cgroups::ProcsFiles(const std::string& name) const {
  std::vector<std::string> procs;
  for (const auto& base : bases_) procs.push_back((base / name / "cgroup.procs").string());
  return procs;
}

std::vector<pid_t> Cgroups::Pids(const std::string& name) const {
  std::vector<pid_t> pids;
  if (bases_.empty()) return pids;
  auto text = ReadControl(bases_.front() / name / "cgroup.procs");
  if (!text) return pids;
  std::stringstream in(*text);
  pid_t pid;
  while (in >> pid) pids.push_back(pid);
  return pids;
}

void Cgroups::Remove(const std::string& name) const {
  for (const auto& base : bases_) {
    fs::path dir = base / name;
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY || std::chrono::steady_clock::now() > deadline) {
        FailErrno(fmt::format("cannot remove cgroup {}", dir.string()), errno);
      }
      // Still populated: end what runs there (v2 kills it in one write).
      if (!unified_ || !WriteControl(dir / "cgroup.kill", "1")) {
        std::stringstream in(ReadControl(dir / "cgroup.procs").value_or(""));
        pid_t pid;
        while (in >> pid) ::kill(pid, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void Cgroups::RemoveBases() const {
  for (const auto& base : bases_) ::rmdir(base.c_str());
}

std::vector<std::string> Cgroups::List() const {
  std::vector<std::string> names;
  if (bases_.empty()) return names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(bases_.front(), ec)) {
    if (entry.is_directory(ec)) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

CgroupUsage Cgroups::Usage(const std::string& name) const {
  CgroupUsage usage;
  for (const auto& base : bases_) {
    fs::path dir = base / name;
    if (unified_) {
      usage.memory_bytes = NumberIn(ReadControl(dir / "memory.current"));
      usage.cpu_usec = KeyedValue(ReadControl(dir / "cpu.stat").value_or(""), "usage_usec");
      usage.oom_kills = KeyedValue(ReadControl(dir / "memory.events").value_or(""), "oom_kill");
      continue;
    }
    if (auto memory = ReadControl(dir / "memory.usage_in_bytes"))
      usage.memory_bytes = NumberIn(memory);
    if (auto oom = ReadControl(dir / "memory.oom_control"))
      usage.oom_kills = KeyedValue(*oom, "oom_kill");
    if (auto cpu = ReadControl(dir / "cpuacct.usage")) usage.cpu_usec = NumberIn(cpu) / 1000;
  }
  return usage;
}

}  // namespace ephemera

// Control groups for sandboxes: one cgroup each, under the daemon's own
// cgroup (never at a hierarchy's root), with memory, pids, CPU and I/O
// limits. Works on a pure v2 host (Debian with systemd: the daemon moves
// itself into a leaf so it may delegate controllers) and on a hybrid host
// (v1 controller mounts beside a v2 mount without them), using for each
// controller the hierarchy that has it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ephemera {

struct CgroupLimits {
  std::optional<std::uint64_t> memory_bytes;  // swap included where the host accounts it
  std::optional<std::uint64_t> pids;
  std::optional<double> cpus;         // CFS quota in whole CPUs, e.g. 1.5
  std::optional<unsigned> io_weight;  // 1..10000 (v1 blkio: scaled to 10..1000)
};

struct CgroupUsage {
  std::uint64_t memory_bytes = 0;
  std::uint64_t cpu_usec = 0;
  std::uint64_t oom_kills = 0;  // processes the OOM killer ended inside
};

class Cgroups {
 public:
  // Finds the hierarchies and the daemon's own cgroup in each, and makes
  // `<own>/<subtree>` (on v2, after moving the daemon into `<own>/daemon` if
  // it shares its cgroup with nothing else). kUnavailable naming what is
  // missing when no memory controller can be used.
  static Cgroups Discover(const std::string& subtree = "ephemera");
  // The subtree a daemon with this state folder owns: "ephemera" for the
  // default one, a name derived from the folder otherwise, so that two
  // daemons (or a test) never reconcile each other's cgroups away.
  static std::string SubtreeFor(const std::filesystem::path& state_dir);
  // Writes where sandbox cgroups are ("v1"/"v2", then a base a line), so
  // that a later process can find them without discovering from its own
  // cgroup (a cleanup run from a maintainer script is in apt's).
  void Record(const std::filesystem::path& file) const;
  // The hierarchies a Record names; none when the file does not exist.
  // kInvalidArgument naming the file when it is not such a record.
  static Cgroups FromRecord(const std::filesystem::path& file);
  // For tests: the hierarchies rooted at given directories.
  Cgroups(bool unified, std::vector<std::filesystem::path> bases);

  bool unified() const { return unified_; }
  // Where sandbox cgroups are made, one per hierarchy used.
  const std::vector<std::filesystem::path>& bases() const { return bases_; }

  // Creates the cgroup `name` (a sandbox id) in every hierarchy and applies
  // the limits. Idempotent. Returns the cgroup.procs files to write a pid to.
  std::vector<std::string> Create(const std::string& name, const CgroupLimits& limits) const;
  // The cgroup.procs files of `name` (made before), one per hierarchy.
  std::vector<std::string> ProcsFiles(const std::string& name) const;
  // Kills whatever still runs in `name` and removes it everywhere;
  // absent is fine. kInternal if it cannot be emptied.
  void Remove(const std::string& name) const;
  // The cgroups that exist under the bases (for reconcile).
  std::vector<std::string> List() const;
  CgroupUsage Usage(const std::string& name) const;
  // Removes the (empty) bases themselves, for a daemon or test that will
  // not come back; a base still holding cgroups is kept.
  void RemoveBases() const;
  // The pids in `name` (from the first hierarchy).
  std::vector<pid_t> Pids(const std::string& name) const;

 private:
  bool unified_ = false;
  std::vector<std::filesystem::path> bases_;
};

}  // namespace ephemera

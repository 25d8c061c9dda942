// The daemon's state in one SQLite file (WAL): sandboxes with their state
// machine, and an event log. Schema changes are numbered migrations applied
// in order at open. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/sandbox.h"
#include "store/event_feed.h"
#include "store/sqlite.h"

namespace ephemera {

// A credential for the remote front doors. Only its SHA-256 is kept.
struct AccessToken {
  std::string id;  // public handle for management ("tok_" + hex)
  std::string name;
  std::string token_sha256;
  bool enabled = true;
  UnixSeconds created_at = 0;
  std::optional<UnixSeconds> expires_at;
  std::optional<std::int64_t> max_sandboxes;    // running at once; none: only the global limit
  std::optional<std::int64_t> rate_per_minute;  // requests; none: the configured default
  std::optional<UnixSeconds> last_used_at;
};

class Store {
 public:
  // Opens (creating if needed) and migrates. kUnavailable if the file
  // cannot be opened; kFailedPrecondition if it is from a newer ephemera.
  explicit Store(const std::filesystem::path& path);

  static int LatestSchemaVersion();
  int SchemaVersion();

  // Records a new sandbox, atomically refusing (kResourceExhausted) when
  // `limit` sandboxes (any state) already exist, or `owner_limit` of the
  // same owner, or when the memory of all sandboxes (each its memory_mib
  // plus its overhead_mib, or `default_overhead_mib` where that is 0) would
  // pass `memory_budget_mib`, or the memory_mib of the owner's would pass
  // `owner_memory_mib`. kAlreadyExists on a duplicate id, or a name the
  // owner already has.
  void Insert(const Sandbox& sandbox, std::optional<std::size_t> limit = std::nullopt,
              std::optional<std::size_t> owner_limit = std::nullopt,
              std::optional<std::uint64_t> memory_budget_mib = std::nullopt,
              std::uint64_t default_overhead_mib = 0,
              std::optional<std::uint64_t> owner_memory_mib = std::nullopt);
  // Moves the sandbox to `to` if IsAllowedTransition allows it from its
  // current state; kFailedPrecondition otherwise, kNotFound if absent.
  Sandbox Transition(const SandboxId& id, SandboxState to, const std::string& reason = "");
  // Writes every field but id, state and created_at.
  void Update(const Sandbox& sandbox);

  // Pause and resume: records `sandbox` (its mutable fields as given) in
  // state `to`, in one transaction with what that state may take. Paused:
  // at most max_paused_per_owner for its owner; ready again: the host's
  // memory budget (which paused sandboxes are out of; an owner's memory
  // limit still counts them). kResourceExhausted
  // saying which limit; kFailedPrecondition for a move its state forbids.
  struct MoveChecks {
    std::optional<std::size_t> max_paused_per_owner;
    std::optional<std::uint64_t> memory_budget_mib;
    std::uint64_t default_overhead_mib = 0;
  };
  Sandbox Move(const Sandbox& sandbox, SandboxState to, const MoveChecks& checks);

  // Hands a ready sandbox of `from_owner` (a warm pool's) to a caller: its
  // owner, client token, name and expiry, in one transaction with the
  // caller's limits (count and memory) and name. kNotFound when it is no
  // longer there or not from_owner's; kResourceExhausted / kAlreadyExists
  // as Insert says them.
  struct Claim {
    std::string owner;
    std::string token_sha256;
    std::string name;
    UnixSeconds expires_at = 0;
    std::optional<std::size_t> owner_limit;
    std::optional<std::uint64_t> owner_memory_mib;
  };
  Sandbox Hand(const SandboxId& id, const std::string& from_owner, const Claim& claim);
  std::optional<Sandbox> Get(const SandboxId& id);
  std::vector<Sandbox> List();
  std::size_t Count();
  // Removes the record; absent is fine (idempotent).
  void Delete(const SandboxId& id);

  // Access tokens. kAlreadyExists on a duplicate id or hash.
  void InsertToken(const AccessToken& token);
  std::vector<AccessToken> ListTokens();
  bool SetTokenEnabled(const std::string& id, bool enabled);  // false if absent
  void SetTokenLastUsed(const std::string& id, UnixSeconds at);
  bool DeleteToken(const std::string& id);  // false if absent

  // The wirt VMs kept running (autostart), by owner uid and name, oldest first.
  void SetAutostart(std::uint32_t uid, const std::string& name, bool on);
  std::vector<std::pair<std::uint32_t, std::string>> ListAutostart();

  // Appends to the event log (kind: core/event_types.h) and publishes it
  // to feed()'s followers, in the log's order.
  Event AddEvent(std::string_view kind, const std::string& sandbox_id, const std::string& detail,
                 const std::string& cause = "");
  std::vector<Event> Events(std::int64_t after_seq = 0, std::size_t limit = 1000);
  // The log's entries as they are added.
  EventFeed& feed() { return feed_; }

 private:
  void Migrate();
  std::optional<Sandbox> GetLocked(const SandboxId& id);
  void UpdateLocked(const Sandbox& sandbox);
  std::uint64_t CommittedMemoryLocked(std::uint64_t default_overhead_mib);

  std::mutex mutex_;
  sqlite::Database db_;
  EventFeed feed_;
};

}  // namespace ephemera

#include "store/store.h"

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace ephemera {

namespace {

// Append only: a released version's migration is never edited.
constexpr const char* kMigrations[] = {
    // 1: sandboxes and events
    R"sql(
CREATE TABLE sandboxes (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  image TEXT NOT NULL,
  image_sha256 TEXT NOT NULL DEFAULT '',
  memory_mib INTEGER NOT NULL,
  vcpus INTEGER NOT NULL,
  owner TEXT NOT NULL,
  token_sha256 TEXT NOT NULL,
  tap TEXT NOT NULL DEFAULT '',
  subnet TEXT NOT NULL DEFAULT '',
  guest_ip TEXT NOT NULL DEFAULT '',
  host_port INTEGER NOT NULL DEFAULT 0,
  username TEXT NOT NULL DEFAULT '',
  host_key_fingerprint TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  sandbox_id TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_sandbox ON events(sandbox_id);
)sql",
    // 2: access tokens for remote front doors; sandboxes counted per owner
    R"sql(
CREATE TABLE access_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL DEFAULT '',
  token_sha256 TEXT NOT NULL UNIQUE,
  enabled INTEGER NOT NULL DEFAULT 1,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  max_sandboxes INTEGER,
  rate_per_minute INTEGER,
  last_used_at INTEGER
);
CREATE INDEX sandboxes_by_owner ON sandboxes(owner);
)sql",
    // 3: several drivers at once: each sandbox records its kind and driver,
    // and the NIC it was given
    R"sql(
ALTER TABLE sandboxes ADD COLUMN kind TEXT NOT NULL DEFAULT 'vm';
ALTER TABLE sandboxes ADD COLUMN driver TEXT NOT NULL DEFAULT 'qemu';
ALTER TABLE sandboxes ADD COLUMN mac TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN network TEXT NOT NULL DEFAULT '';
)sql",
    // 4: the ISO a sandbox booted from (Anweddol's container_iso_path)
    R"sql(
ALTER TABLE sandboxes ADD COLUMN iso_path TEXT NOT NULL DEFAULT '';
)sql",
    // 5: machines of a pipeline's run, and the host key itself for pinning
    R"sql(
ALTER TABLE sandboxes ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN machine TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN host_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX sandboxes_by_run_machine ON sandboxes(run_id, machine) WHERE run_id != '';
)sql",
    // 6: each sandbox's host memory beyond its guest's (images differ in
    // the translation cache they need); 0 for rows from before
    R"sql(
ALTER TABLE sandboxes ADD COLUMN overhead_mib INTEGER NOT NULL DEFAULT 0;
)sql",
    // 7: named sandboxes (a wirt VM's instance), one name per owner; the
    // wirt VMs that are kept running
    R"sql(
ALTER TABLE sandboxes ADD COLUMN name TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX sandboxes_by_owner_name ON sandboxes(owner, name) WHERE name != '';
CREATE TABLE wirt_autostart (
  uid INTEGER NOT NULL,
  name TEXT NOT NULL,
  since INTEGER NOT NULL,
  PRIMARY KEY (uid, name)
);
)sql",
    // 8: paused sandboxes (when, and the TTL they had left)
    R"sql(
ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
ALTER TABLE sandboxes ADD COLUMN ttl_left INTEGER NOT NULL DEFAULT 0;
)sql",
    // 9: idle timeouts
    R"sql(
ALTER TABLE sandboxes ADD COLUMN idle_timeout INTEGER NOT NULL DEFAULT 0;
)sql",
    // 10: egress rules (older sandboxes had what outbound NAT gave)
    R"sql(
ALTER TABLE sandboxes ADD COLUMN egress TEXT NOT NULL DEFAULT 'all';
)sql",
    // 11: events get a cause for programs, and the names of core/event_types.h
    R"sql(
ALTER TABLE events ADD COLUMN cause TEXT NOT NULL DEFAULT '';
UPDATE events SET kind = 'expired', cause = CASE
    WHEN detail LIKE 'time to live expired%' THEN 'ttl' ELSE 'paused_too_long' END
  WHERE kind = 'destroy' AND (detail LIKE 'time to live expired%'
    OR detail LIKE 'paused for longer than %');
UPDATE events SET kind = 'reaped', cause = CASE
    WHEN detail LIKE 'the guest shut down%' THEN 'guest_shutdown'
    WHEN detail LIKE 'idle for %' THEN 'idle'
    WHEN detail LIKE 'its VM is gone%' THEN 'vm_gone'
    WHEN detail LIKE 'its saved state is gone%' THEN 'saved_state_gone'
    WHEN detail LIKE 'its creation did not finish%' THEN 'unfinished_create'
    ELSE 'unfinished_teardown' END
  WHERE kind = 'destroy' AND (detail LIKE 'the guest shut down%' OR detail LIKE 'idle for %'
    OR detail LIKE 'its VM is gone%' OR detail LIKE 'its saved state is gone%'
    OR detail LIKE 'its creation did not finish%' OR detail LIKE 'unfinished teardown%');
UPDATE events SET cause = 'request' WHERE kind = 'destroy' AND detail = 'destroyed by request';
UPDATE events SET kind = CASE kind
  WHEN 'create' THEN 'created' WHEN 'create_failed' THEN 'failed' WHEN 'destroy' THEN 'destroyed'
  WHEN 'pause' THEN 'paused' WHEN 'resume' THEN 'resumed' WHEN 'ttl' THEN 'ttl_changed'
  WHEN 'expose' THEN 'port_exposed' WHEN 'unexpose' THEN 'port_closed'
  WHEN 'image' THEN 'image_imported' WHEN 'token_add' THEN 'token_added'
  WHEN 'token_enable' THEN 'token_enabled' WHEN 'token_disable' THEN 'token_disabled'
  WHEN 'token_delete' THEN 'token_deleted' WHEN 'daemon_start' THEN 'daemon_started'
  WHEN 'daemon_stop' THEN 'daemon_stopped' ELSE kind END;
)sql",
};

constexpr char kColumns[] =
    "id, state, reason, image, image_sha256, memory_mib, vcpus, owner, token_sha256, tap, subnet, "
    "guest_ip, host_port, username, host_key_fingerprint, created_at, expires_at, kind, driver, "
    "mac, network, iso_path, run_id, machine, host_key, overhead_mib, name, paused_at, ttl_left, "
    "idle_timeout, egress";

// What changes after a sandbox is recorded, bound in this order by
// BindMutable (for both INSERT and UPDATE).
constexpr std::string_view kMutableColumns =
    "reason, image_sha256, tap, subnet, guest_ip, host_port, username, host_key_fingerprint, "
    "expires_at, mac, network, iso_path, host_key, paused_at, ttl_left, updated_at";

// Binds kMutableColumns from `first` on; returns the next free index.
int BindMutable(sqlite::Statement& stmt, int first, const Sandbox& s) {
  stmt.Bind(first, s.reason)
      .Bind(first + 1, s.image_sha256)
      .Bind(first + 2, s.tap)
      .Bind(first + 3, s.subnet)
      .Bind(first + 4, s.guest_ip)
      .Bind(first + 5, std::int64_t{s.host_port})
      .Bind(first + 6, s.username)
      .Bind(first + 7, s.host_key_fingerprint)
      .Bind(first + 8, s.expires_at)
      .Bind(first + 9, s.mac)
      .Bind(first + 10, s.network)
      .Bind(first + 11, s.iso_path)
      .Bind(first + 12, s.host_key)
      .Bind(first + 13, s.paused_at)
      .Bind(first + 14, s.ttl_left_seconds)
      .Bind(first + 15, NowUnix());
  return first + 16;
}

// Runs an INSERT; a constraint violation names what already exists.
void RunInsert(sqlite::Statement& insert, const std::string& what) {
  try {
    insert.Run();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kAlreadyExists)
      Fail(ErrorCode::kAlreadyExists, "{} already exists", what);
    throw;
  }
}

Sandbox ReadRow(const sqlite::Statement& row) {
  Sandbox s(SandboxId::Parse(row.Text(0)));
  s.state = ParseState(row.Text(1));
  s.reason = row.Text(2);
  s.spec.image = row.Text(3);
  s.image_sha256 = row.Text(4);
  s.spec.memory_mib = static_cast<unsigned>(row.Int(5));
  s.spec.vcpus = static_cast<unsigned>(row.Int(6));
  s.owner = row.Text(7);
  s.token_sha256 = row.Text(8);
  s.tap = row.Text(9);
  s.subnet = row.Text(10);
  s.guest_ip = row.Text(11);
  s.host_port = static_cast<std::uint16_t>(row.Int(12));
  s.username = row.Text(13);
  s.host_key_fingerprint = row.Text(14);
  s.created_at = row.Int(15);
  s.expires_at = row.OptionalInt(16);
  s.spec.kind = ParseKind(row.Text(17));
  s.driver = row.Text(18);
  s.mac = row.Text(19);
  s.network = row.Text(20);
  s.iso_path = row.Text(21);
  s.spec.run_id = row.Text(22);
  s.spec.machine = row.Text(23);
  s.host_key = row.Text(24);
  s.overhead_mib = static_cast<unsigned>(row.Int(25));
  s.name = row.Text(26);
  s.paused_at = row.OptionalInt(27);
  s.ttl_left_seconds = row.Int(28);
  s.spec.idle_timeout_seconds = row.Int(29);
  try {
    s.spec.egress = ParseEgress(row.Text(30));
  } catch (const Error& e) {
    // Only a hand-edited row gets here: the strictest reading of it.
    spdlog::warn("sandbox {}: stored egress unreadable ({}): taken as none", s.id.str(), e.what());
    s.spec.egress = EgressPolicy{EgressMode::kNone, {}, {}};
  }
  return s;
}

}  // namespace

int Store::LatestSchemaVersion() { return static_cast<int>(std::size(kMigrations)); }

Store::Store(const std::filesystem::path& path) : db_(path) {
  db_.Exec("PRAGMA journal_mode=WAL");
  db_.Exec("PRAGMA synchronous=NORMAL");  // WAL + NORMAL: durable across a daemon crash
  db_.Exec("PRAGMA foreign_keys=ON");
  Migrate();
}

int Store::SchemaVersion() {
  std::lock_guard lock(mutex_);
  auto stmt = db_.Prepare("PRAGMA user_version");
  stmt.Step();
  return static_cast<int>(stmt.Int(0));
}

void Store::Migrate() {
  auto stmt = db_.Prepare("PRAGMA user_version");
  stmt.Step();
  int version = static_cast<int>(stmt.Int(0));
  if (version > LatestSchemaVersion()) {
    Fail(ErrorCode::kFailedPrecondition,
         "the state database has schema version {}, newer than this ephemerad knows ({})", version,
         LatestSchemaVersion());
  }
  for (int v = version; v < LatestSchemaVersion(); ++v) {
    sqlite::Transaction tx(db_);
    db_.Exec(kMigrations[v]);
    db_.Exec("PRAGMA user_version = " + std::to_string(v + 1));
    tx.Commit();
  }
}

void Store::Insert(const Sandbox& s, std::optional<std::size_t> limit,
                   std::optional<std::size_t> owner_limit,
                   std::optional<std::uint64_t> memory_budget_mib,
                   std::uint64_t default_overhead_mib,
                   std::optional<std::uint64_t> owner_memory_mib) {
  std::lock_guard lock(mutex_);
  sqlite::Transaction tx(db_);
  if (limit) {
    auto count = db_.Prepare("SELECT COUNT(*) FROM sandboxes");
    count.Step();
    if (static_cast<std::size_t>(count.Int(0)) >= *limit) {
      Fail(ErrorCode::kResourceExhausted, "the limit of {} sandboxes is reached", *limit);
    }
  }
  if (owner_limit) {
    auto count = db_.Prepare("SELECT COUNT(*) FROM sandboxes WHERE owner = ?");
    count.Bind(1, s.owner).Step();
    if (static_cast<std::size_t>(count.Int(0)) >= *owner_limit) {
      Fail(ErrorCode::kResourceExhausted, "this caller's limit of {} sandboxes is reached",
           *owner_limit);
    }
  }
  if (owner_memory_mib) {
    // Paused ones count: a caller must not hold more than its share by
    // pausing and resuming.
    auto used = db_.Prepare("SELECT COALESCE(SUM(memory_mib), 0) FROM sandboxes WHERE owner = ?");
    used.Bind(1, s.owner).Step();
    const auto in_use = static_cast<std::uint64_t>(used.Int(0));
    if (in_use + s.spec.memory_mib > *owner_memory_mib) {
      Fail(ErrorCode::kResourceExhausted,
           "this caller's memory limit is reached ({} of {} MiB in use; this sandbox asks for {} "
           "MiB)",
           in_use, *owner_memory_mib, s.spec.memory_mib);
    }
  }
  if (memory_budget_mib) {
    const std::uint64_t in_use = CommittedMemoryLocked(default_overhead_mib);
    const std::uint64_t wanted =
        s.spec.memory_mib + (s.overhead_mib ? s.overhead_mib : default_overhead_mib);
    if (in_use + wanted > *memory_budget_mib) {
      Fail(ErrorCode::kResourceExhausted,
           "the host's memory budget is used up ({} of {} MiB committed; this sandbox needs {} "
           "MiB)",
           in_use, *memory_budget_mib, wanted);
    }
  }
  if (!s.spec.run_id.empty()) {
    auto holder = db_.Prepare("SELECT id, owner FROM sandboxes WHERE run_id = ? AND machine = ?");
    holder.Bind(1, s.spec.run_id).Bind(2, s.spec.machine);
    if (holder.Step()) {
      // Another owner's sandbox is not named to this one.
      Fail(ErrorCode::kAlreadyExists, "run '{}' already has a machine named '{}' ({})",
           s.spec.run_id, s.spec.machine,
           holder.Text(1) == s.owner ? "sandbox " + holder.Text(0) : "another owner's sandbox");
    }
  }
  if (!s.name.empty()) {
    auto holder = db_.Prepare("SELECT id FROM sandboxes WHERE owner = ? AND name = ?");
    holder.Bind(1, s.owner).Bind(2, s.name);
    if (holder.Step()) {
      Fail(ErrorCode::kAlreadyExists, "a sandbox named '{}' already runs (sandbox {})", s.name,
           holder.Text(0));
    }
  }
  auto insert = db_.Prepare(
      fmt::format("INSERT INTO sandboxes (id, state, image, memory_mib, vcpus, owner, "
                  "token_sha256, created_at, kind, driver, run_id, machine, "
                  "overhead_mib, name, idle_timeout, egress, {}) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  kMutableColumns));
  insert.Bind(1, s.id.str())
      .Bind(2, StateName(s.state))
      .Bind(3, s.spec.image)
      .Bind(4, std::int64_t{s.spec.memory_mib})
      .Bind(5, std::int64_t{s.spec.vcpus})
      .Bind(6, s.owner)
      .Bind(7, s.token_sha256)
      .Bind(8, s.created_at)
      .Bind(9, KindName(s.spec.kind))
      .Bind(10, s.driver)
      .Bind(11, s.spec.run_id)
      .Bind(12, s.spec.machine)
      .Bind(13, std::int64_t{s.overhead_mib})
      .Bind(14, s.name)
      .Bind(15, s.spec.idle_timeout_seconds)
      .Bind(16, s.spec.egress.Text());
  BindMutable(insert, 17, s);
  RunInsert(insert, "sandbox " + s.id.str());
  tx.Commit();
}

std::optional<Sandbox> Store::GetLocked(const SandboxId& id) {
  auto stmt = db_.Prepare(fmt::format("SELECT {} FROM sandboxes WHERE id = ?", kColumns));
  stmt.Bind(1, id.str());
  if (!stmt.Step()) return std::nullopt;
  return ReadRow(stmt);
}

std::optional<Sandbox> Store::Get(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  return GetLocked(id);
}

Sandbox Store::Transition(const SandboxId& id, SandboxState to, const std::string& reason) {
  std::lock_guard lock(mutex_);
  sqlite::Transaction tx(db_);
  auto current = GetLocked(id);
  if (!current) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (!IsAllowedTransition(current->state, to)) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} cannot go from {} to {}", id.str(),
         StateName(current->state), StateName(to));
  }
  auto stmt =
      db_.Prepare("UPDATE sandboxes SET state = ?, reason = ?, updated_at = ? WHERE id = ?");
  stmt.Bind(1, StateName(to)).Bind(2, reason).Bind(3, NowUnix()).Bind(4, id.str()).Run();
  tx.Commit();
  current->state = to;
  current->reason = reason;
  return *current;
}

void Store::Update(const Sandbox& s) {
  std::lock_guard lock(mutex_);
  UpdateLocked(s);
}

std::uint64_t Store::CommittedMemoryLocked(std::uint64_t default_overhead_mib) {
  // A paused sandbox's memory is free until it resumes.
  auto committed = db_.Prepare(
      "SELECT COALESCE(SUM(memory_mib + CASE WHEN overhead_mib > 0 THEN overhead_mib ELSE ? "
      "END), 0) FROM sandboxes WHERE state != 'paused'");
  committed.Bind(1, static_cast<std::int64_t>(default_overhead_mib)).Step();
  return static_cast<std::uint64_t>(committed.Int(0));
}

Sandbox Store::Move(const Sandbox& s, SandboxState to, const MoveChecks& checks) {
  std::lock_guard lock(mutex_);
  sqlite::Transaction tx(db_);
  auto current = GetLocked(s.id);
  if (!current) Fail(ErrorCode::kNotFound, "no sandbox {}", s.id.str());
  if (!IsAllowedTransition(current->state, to)) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is {}, it cannot become {}", s.id.str(),
         StateName(current->state), StateName(to));
  }
  if (to == SandboxState::kPaused && checks.max_paused_per_owner) {
    auto count = db_.Prepare("SELECT COUNT(*) FROM sandboxes WHERE owner = ? AND state = 'paused'");
    count.Bind(1, current->owner).Step();
    if (static_cast<std::size_t>(count.Int(0)) >= *checks.max_paused_per_owner) {
      Fail(ErrorCode::kResourceExhausted, "this caller's limit of {} paused sandboxes is reached",
           *checks.max_paused_per_owner);
    }
  }
  if (to == SandboxState::kReady && checks.memory_budget_mib) {
    const std::uint64_t in_use = CommittedMemoryLocked(checks.default_overhead_mib);
    const std::uint64_t wanted =
        current->spec.memory_mib +
        (current->overhead_mib ? current->overhead_mib : checks.default_overhead_mib);
    if (in_use + wanted > *checks.memory_budget_mib) {
      Fail(ErrorCode::kResourceExhausted,
           "the host's memory budget is used up ({} of {} MiB committed; this sandbox needs {} "
           "MiB)",
           in_use, *checks.memory_budget_mib, wanted);
    }
  }
  UpdateLocked(s);
  auto state = db_.Prepare("UPDATE sandboxes SET state = ? WHERE id = ?");
  state.Bind(1, StateName(to)).Bind(2, s.id.str()).Run();
  tx.Commit();
  Sandbox moved = s;
  moved.state = to;
  return moved;
}

Sandbox Store::Hand(const SandboxId& id, const std::string& from_owner, const Claim& claim) {
  std::lock_guard lock(mutex_);
  sqlite::Transaction tx(db_);
  auto current = GetLocked(id);
  if (!current || current->owner != from_owner || current->state != SandboxState::kReady) {
    Fail(ErrorCode::kNotFound, "sandbox {} is not {}'s to hand out", id.str(), from_owner);
  }
  if (claim.owner_limit) {
    auto count = db_.Prepare("SELECT COUNT(*) FROM sandboxes WHERE owner = ?");
    count.Bind(1, claim.owner).Step();
    if (static_cast<std::size_t>(count.Int(0)) >= *claim.owner_limit) {
      Fail(ErrorCode::kResourceExhausted, "this caller's limit of {} sandboxes is reached",
           *claim.owner_limit);
    }
  }
  if (claim.owner_memory_mib) {
    auto used = db_.Prepare("SELECT COALESCE(SUM(memory_mib), 0) FROM sandboxes WHERE owner = ?");
    used.Bind(1, claim.owner).Step();
    const auto in_use = static_cast<std::uint64_t>(used.Int(0));
    if (in_use + current->spec.memory_mib > *claim.owner_memory_mib) {
      Fail(ErrorCode::kResourceExhausted,
           "this caller's memory limit is reached ({} of {} MiB in use; this sandbox asks for {} "
           "MiB)",
           in_use, *claim.owner_memory_mib, current->spec.memory_mib);
    }
  }
  if (!claim.name.empty()) {
    auto holder = db_.Prepare("SELECT id FROM sandboxes WHERE owner = ? AND name = ?");
    holder.Bind(1, claim.owner).Bind(2, claim.name);
    if (holder.Step()) {
      Fail(ErrorCode::kAlreadyExists, "a sandbox named '{}' already runs (sandbox {})", claim.name,
           holder.Text(0));
    }
  }
  const UnixSeconds now = NowUnix();
  auto update = db_.Prepare(
      "UPDATE sandboxes SET owner = ?, token_sha256 = ?, name = ?, expires_at = ?, created_at = ?, "
      "updated_at = ? WHERE id = ?");
  update.Bind(1, claim.owner)
      .Bind(2, claim.token_sha256)
      .Bind(3, claim.name)
      .Bind(4, claim.expires_at)
      .Bind(5, now)
      .Bind(6, now)
      .Bind(7, id.str())
      .Run();
  tx.Commit();
  current->owner = claim.owner;
  current->token_sha256 = claim.token_sha256;
  current->name = claim.name;
  current->expires_at = claim.expires_at;
  current->created_at = now;
  return *current;
}

void Store::UpdateLocked(const Sandbox& s) {
  std::string assignments;
  for (std::string_view rest = kMutableColumns; !rest.empty();) {
    auto comma = rest.find(", ");
    assignments += fmt::format("{}{} = ?", assignments.empty() ? "" : ", ", rest.substr(0, comma));
    rest = comma == std::string_view::npos ? "" : rest.substr(comma + 2);
  }
  auto stmt = db_.Prepare(fmt::format("UPDATE sandboxes SET {} WHERE id = ?", assignments));
  stmt.Bind(BindMutable(stmt, 1, s), s.id.str()).Run();
  if (db_.Changes() == 0) Fail(ErrorCode::kNotFound, "no sandbox {}", s.id.str());
}

std::vector<Sandbox> Store::List() {
  std::lock_guard lock(mutex_);
  auto stmt =
      db_.Prepare(fmt::format("SELECT {} FROM sandboxes ORDER BY created_at, id", kColumns));
  std::vector<Sandbox> all;
  while (stmt.Step()) all.push_back(ReadRow(stmt));
  return all;
}

std::size_t Store::Count() {
  std::lock_guard lock(mutex_);
  auto stmt = db_.Prepare("SELECT COUNT(*) FROM sandboxes");
  stmt.Step();
  return static_cast<std::size_t>(stmt.Int(0));
}

void Store::Delete(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  db_.Prepare("DELETE FROM sandboxes WHERE id = ?").Bind(1, id.str()).Run();
}

Event Store::AddEvent(std::string_view kind, const std::string& sandbox_id,
                      const std::string& detail, const std::string& cause) {
  Event event{0, NowUnix(), sandbox_id, std::string(kind), detail, cause};
  std::lock_guard lock(mutex_);
  db_.Prepare("INSERT INTO events (at, sandbox_id, kind, detail, cause) VALUES (?,?,?,?,?)")
      .Bind(1, event.at)
      .Bind(2, sandbox_id)
      .Bind(3, event.kind)
      .Bind(4, detail)
      .Bind(5, cause)
      .Run();
  event.seq = db_.LastInsertRowId();
  // Under the lock: followers see the log's order.
  feed_.Publish(event);
  return event;
}

std::vector<Event> Store::Events(std::int64_t after_seq, std::size_t limit) {
  std::lock_guard lock(mutex_);
  auto stmt = db_.Prepare(
      "SELECT seq, at, sandbox_id, kind, detail, cause FROM events WHERE seq > ? ORDER BY seq "
      "LIMIT ?");
  stmt.Bind(1, after_seq).Bind(2, static_cast<std::int64_t>(limit));
  std::vector<Event> events;
  while (stmt.Step()) {
    events.push_back(
        {stmt.Int(0), stmt.Int(1), stmt.Text(2), stmt.Text(3), stmt.Text(4), stmt.Text(5)});
  }
  return events;
}

namespace {

constexpr char kTokenColumns[] =
    "id, name, token_sha256, enabled, created_at, expires_at, max_sandboxes, rate_per_minute, "
    "last_used_at";

AccessToken ReadToken(const sqlite::Statement& row) {
  AccessToken t;
  t.id = row.Text(0);
  t.name = row.Text(1);
  t.token_sha256 = row.Text(2);
  t.enabled = row.Int(3) != 0;
  t.created_at = row.Int(4);
  t.expires_at = row.OptionalInt(5);
  t.max_sandboxes = row.OptionalInt(6);
  t.rate_per_minute = row.OptionalInt(7);
  t.last_used_at = row.OptionalInt(8);
  return t;
}

}  // namespace

void Store::InsertToken(const AccessToken& t) {
  std::lock_guard lock(mutex_);
  auto insert = db_.Prepare(
      fmt::format("INSERT INTO access_tokens ({}) VALUES (?,?,?,?,?,?,?,?,?)", kTokenColumns));
  insert.Bind(1, t.id)
      .Bind(2, t.name)
      .Bind(3, t.token_sha256)
      .Bind(4, std::int64_t{t.enabled})
      .Bind(5, t.created_at)
      .Bind(6, t.expires_at)
      .Bind(7, t.max_sandboxes)
      .Bind(8, t.rate_per_minute)
      .Bind(9, t.last_used_at);
  RunInsert(insert, "access token " + t.id);
}

std::vector<AccessToken> Store::ListTokens() {
  std::lock_guard lock(mutex_);
  auto stmt = db_.Prepare(
      fmt::format("SELECT {} FROM access_tokens ORDER BY created_at, id", kTokenColumns));
  std::vector<AccessToken> all;
  while (stmt.Step()) all.push_back(ReadToken(stmt));
  return all;
}

bool Store::SetTokenEnabled(const std::string& id, bool enabled) {
  std::lock_guard lock(mutex_);
  db_.Prepare("UPDATE access_tokens SET enabled = ? WHERE id = ?")
      .Bind(1, std::int64_t{enabled})
      .Bind(2, id)
      .Run();
  return db_.Changes() > 0;
}

void Store::SetTokenLastUsed(const std::string& id, UnixSeconds at) {
  std::lock_guard lock(mutex_);
  db_.Prepare("UPDATE access_tokens SET last_used_at = ? WHERE id = ?")
      .Bind(1, at)
      .Bind(2, id)
      .Run();
}

bool Store::DeleteToken(const std::string& id) {
  std::lock_guard lock(mutex_);
  db_.Prepare("DELETE FROM access_tokens WHERE id = ?").Bind(1, id).Run();
  return db_.Changes() > 0;
}

void Store::SetAutostart(std::uint32_t uid, const std::string& name, bool on) {
  std::lock_guard lock(mutex_);
  if (on) {
    db_.Prepare("INSERT OR IGNORE INTO wirt_autostart (uid, name, since) VALUES (?, ?, ?)")
        .Bind(1, std::int64_t{uid})
        .Bind(2, name)
        .Bind(3, NowUnix())
        .Run();
  } else {
    db_.Prepare("DELETE FROM wirt_autostart WHERE uid = ? AND name = ?")
        .Bind(1, std::int64_t{uid})
        .Bind(2, name)
        .Run();
  }
}

std::vector<std::pair<std::uint32_t, std::string>> Store::ListAutostart() {
  std::lock_guard lock(mutex_);
  auto stmt = db_.Prepare("SELECT uid, name FROM wirt_autostart ORDER BY since, uid, name");
  std::vector<std::pair<std::uint32_t, std::string>> all;
  while (stmt.Step()) all.emplace_back(static_cast<std::uint32_t>(stmt.Int(0)), stmt.Text(1));
  return all;
}

}  // namespace ephemera

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <atomic>
#include <thread>

#include "core/error.h"
#include "store/sqlite.h"
#include "store/store.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using ::testing::HasSubstr;

Sandbox MakeSandbox() {
  Sandbox s(SandboxId::Generate());
  s.spec.image = "default";
  s.spec.memory_mib = 256;
  s.spec.vcpus = 1;
  s.image_sha256 = std::string(64, 'a');
  s.token_sha256 = std::string(64, 'b');
  s.created_at = NowUnix();
  return s;
}

class StoreTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  std::filesystem::path path_ = dir_.path() / "state.db";
};

TEST_F(StoreTest, FreshDatabaseIsMigratedToTheLatestSchemaInWalMode) {
  Store store(path_);
  EXPECT_EQ(store.SchemaVersion(), Store::LatestSchemaVersion());
  sqlite::Database raw(path_);
  auto mode = raw.Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.Step());
  EXPECT_EQ(mode.Text(0), "wal");
}

TEST_F(StoreTest, TheDatabaseAndItsJournalAreTheDaemonsOnly) {
  // An existing file others could read is closed to them too.
  test::WriteBytes(path_, "");
  std::filesystem::permissions(path_, std::filesystem::perms(0644));
  Store store(path_);
  store.Insert(MakeSandbox());
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat((path_.string() + suffix).c_str(), &st), 0) << suffix;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << suffix;
  }
}

TEST_F(StoreTest, ReopeningKeepsDataAndDoesNotRemigrate) {
  Sandbox s = MakeSandbox();
  {
    Store store(path_);
    store.Insert(s);
  }
  Store again(path_);
  ASSERT_TRUE(again.Get(s.id));
  EXPECT_EQ(again.Get(s.id)->image_sha256, s.image_sha256);
}

TEST_F(StoreTest, EgressRulesAreKeptAndAnUnreadableOneReadsAsNone) {
  Sandbox s = MakeSandbox();
  s.spec.egress = MakeEgressPolicy("allow", {"example.test", "203.0.113.0/24"});
  Sandbox plain = MakeSandbox();
  {
    Store store(path_);
    store.Insert(s);
    store.Insert(plain);
  }
  {
    Store store(path_);
    EXPECT_EQ(store.Get(s.id)->spec.egress, s.spec.egress);
    EXPECT_EQ(store.Get(plain.id)->spec.egress.mode, EgressMode::kAll);
  }
  {
    sqlite::Database raw(path_);
    raw.Exec("UPDATE sandboxes SET egress = 'allow ../x' WHERE id = '" + s.id.str() + "'");
  }
  Store store(path_);
  EXPECT_EQ(store.Get(s.id)->spec.egress.mode, EgressMode::kNone);
  EXPECT_EQ(store.List().size(), 2u);  // the row is still there and listed
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  { Store store(path_); }
  {
    sqlite::Database raw(path_);
    raw.Exec("PRAGMA user_version = 999");
  }
  try {
    Store store(path_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("999"));
  }
}

TEST_F(StoreTest, RoundTripsEveryField) {
  Store store(path_);
  Sandbox s = MakeSandbox();
  s.expires_at = s.created_at + 600;
  s.spec.kind = SandboxKind::kContainer;
  s.spec.run_id = "run-7";
  s.spec.machine = "m1";
  s.driver = "libvirt";
  store.Insert(s);
  s.tap = "eph12345678";
  s.host_key = "ssh-ed25519 AAAAC3";
  s.mac = "52:54:00:12:34:56";
  s.network = "eph-12345678";
  s.subnet = "172.16.0.0/30";
  s.guest_ip = "172.16.0.2";
  s.host_port = 10042;
  s.username = "user_12345";
  s.host_key_fingerprint = "SHA256:abc";
  store.Update(s);
  Sandbox got = *store.Get(s.id);
  EXPECT_EQ(got.state, SandboxState::kCreating);
  EXPECT_EQ(got.tap, s.tap);
  EXPECT_EQ(got.subnet, s.subnet);
  EXPECT_EQ(got.guest_ip, s.guest_ip);
  EXPECT_EQ(got.host_port, 10042);
  EXPECT_EQ(got.username, "user_12345");
  EXPECT_EQ(got.host_key_fingerprint, "SHA256:abc");
  EXPECT_EQ(got.token_sha256, s.token_sha256);
  EXPECT_EQ(got.expires_at, s.expires_at);
  EXPECT_EQ(got.spec.memory_mib, 256u);
  EXPECT_EQ(got.spec.kind, SandboxKind::kContainer);
  EXPECT_EQ(got.driver, "libvirt");
  EXPECT_EQ(got.mac, s.mac);
  EXPECT_EQ(got.network, s.network);
  EXPECT_EQ(got.spec.run_id, "run-7");
  EXPECT_EQ(got.spec.machine, "m1");
  EXPECT_EQ(got.host_key, "ssh-ed25519 AAAAC3");
}

TEST_F(StoreTest, ARunHoldsOneMachineOfEachName) {
  Store store(path_);
  Sandbox first = MakeSandbox();
  first.spec.run_id = "run-7";
  first.spec.machine = "m1";
  store.Insert(first);
  Sandbox again = MakeSandbox();
  again.spec.run_id = "run-7";
  again.spec.machine = "m1";
  try {
    store.Insert(again);
    ADD_FAILURE() << "two m1 in run-7";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), ::testing::HasSubstr(first.id.str()));
  }
  // Another owner learns that the name is taken, not by which sandbox.
  Sandbox others = again;
  others.owner = "uid:1001";
  try {
    store.Insert(others);
    ADD_FAILURE() << "two m1 in run-7";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), ::testing::Not(::testing::HasSubstr(first.id.str())));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("another owner's sandbox"));
  }
  again.spec.run_id = "run-8";  // the name is free in another run
  store.Insert(again);
  Sandbox plain1 = MakeSandbox(), plain2 = MakeSandbox();  // no run: no constraint
  store.Insert(plain1);
  store.Insert(plain2);
  EXPECT_EQ(store.List().size(), 4u);
  store.Delete(first.id);
  Sandbox rerun = MakeSandbox();  // a rerun once the first is gone
  rerun.spec.run_id = "run-7";
  rerun.spec.machine = "m1";
  store.Insert(rerun);
}

TEST_F(StoreTest, NoColumnCanHoldAPasswordOrAToken) {
  Store store(path_);
  sqlite::Database raw(path_);
  auto columns = raw.Prepare("SELECT name FROM pragma_table_info('sandboxes')");
  while (columns.Step()) {
    std::string name = columns.Text(0);
    EXPECT_THAT(name, ::testing::Not(HasSubstr("password")));
    if (name.find("token") != std::string::npos) {
      EXPECT_EQ(name, "token_sha256");
    }
  }
}

TEST_F(StoreTest, TransitionsFollowTheStateMachine) {
  Store store(path_);
  Sandbox s = MakeSandbox();
  store.Insert(s);
  EXPECT_EQ(store.Transition(s.id, SandboxState::kProvisioning).state, SandboxState::kProvisioning);
  try {
    store.Transition(s.id, SandboxState::kCreating);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("provisioning to creating"));
  }
  store.Transition(s.id, SandboxState::kFailed, "sshd never came up");
  EXPECT_EQ(store.Get(s.id)->reason, "sshd never came up");
  store.Transition(s.id, SandboxState::kDestroying, "rollback");
  EXPECT_THROW(store.Transition(SandboxId::Generate(), SandboxState::kReady), Error);
}

TEST_F(StoreTest, DuplicateIdAndIdempotentDelete) {
  Store store(path_);
  Sandbox s = MakeSandbox();
  store.Insert(s);
  try {
    store.Insert(s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  }
  store.Delete(s.id);
  store.Delete(s.id);
  EXPECT_FALSE(store.Get(s.id));
  EXPECT_EQ(store.Count(), 0u);
}

TEST_F(StoreTest, LimitHoldsUnderConcurrentInserts) {
  Store store(path_);
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        try {
          store.Insert(MakeSandbox(), 7);
          ++accepted;
        } catch (const Error& e) {
          if (e.code() == ErrorCode::kResourceExhausted) ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 7);
  EXPECT_EQ(refused.load(), 33);
  EXPECT_EQ(store.List().size(), 7u);
}

TEST_F(StoreTest, EventsAreOrderedAndPaged) {
  Store store(path_);
  store.AddEvent("create", "a", "x");
  store.AddEvent("destroy", "a", "y");
  store.AddEvent("start", "", "");
  auto all = store.Events();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].kind, "create");
  EXPECT_LT(all[0].seq, all[1].seq);
  auto rest = store.Events(all[0].seq, 1);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].kind, "destroy");
}

TEST_F(StoreTest, EventsArePublishedToFollowersInOrderWithTheirSeqAndCause) {
  Store store(path_);
  auto follower = store.feed().Subscribe();
  Event added = store.AddEvent("failed", "a", "setup failed", "timeout");
  std::optional<Event> heard = follower->Next(std::chrono::seconds(1));
  ASSERT_TRUE(heard);
  EXPECT_EQ(heard->seq, added.seq);
  EXPECT_EQ(heard->cause, "timeout");
  EXPECT_EQ(store.Events().back().cause, "timeout");
  EXPECT_EQ(store.Events().back().seq, added.seq);
}

TEST_F(StoreTest, OldEventNamesAreMigratedToTheCurrentTypes) {
  { Store store(path_); }
  {
    sqlite::Database raw(path_);
    raw.Exec("ALTER TABLE events DROP COLUMN cause");
    raw.Exec("PRAGMA user_version = 10");
    raw.Exec(
        "INSERT INTO events (at, sandbox_id, kind, detail) VALUES "
        "(1, 'a', 'create', 'default'), (2, 'a', 'destroy', 'time to live expired'), "
        "(3, 'b', 'destroy', 'the guest shut down'), (4, 'c', 'destroy', 'destroyed by request'), "
        "(5, '', 'daemon_start', '0.1.0'), (6, 'c', 'create_failed', 'x'), "
        "(7, 'd', 'destroy', 'paused for longer than limits.max_paused_seconds')");
  }
  Store store(path_);
  std::vector<std::string> kinds;
  for (const Event& e : store.Events()) kinds.push_back(e.kind + ":" + e.cause);
  EXPECT_EQ(kinds, (std::vector<std::string>{
                       "created:", "expired:ttl", "reaped:guest_shutdown", "destroyed:request",
                       "daemon_started:", "failed:", "expired:paused_too_long"}));
}

TEST_F(StoreTest, UnopenablePathIsUnavailable) {
  try {
    Store store(dir_.path() / "missing" / "dir" / "state.db");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
}

TEST_F(StoreTest, AccessTokensRoundTripAndKeepOnlyTheirHash) {
  {
    Store store(path_);
    AccessToken t;
    t.id = "tok_1";
    t.name = "ci";
    t.token_sha256 = std::string(64, 'c');
    t.created_at = 100;
    t.expires_at = 200;
    t.max_sandboxes = 2;
    store.InsertToken(t);
    AccessToken duplicate = t;
    duplicate.id = "tok_2";  // same hash
    EXPECT_THROW(store.InsertToken(duplicate), Error);
    EXPECT_TRUE(store.SetTokenEnabled("tok_1", false));
    EXPECT_FALSE(store.SetTokenEnabled("tok_absent", false));
    store.SetTokenLastUsed("tok_1", 150);
  }
  Store reopened(path_);
  auto tokens = reopened.ListTokens();
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0].name, "ci");
  EXPECT_FALSE(tokens[0].enabled);
  EXPECT_EQ(tokens[0].expires_at, 200);
  EXPECT_EQ(tokens[0].max_sandboxes, 2);
  EXPECT_FALSE(tokens[0].rate_per_minute);
  EXPECT_EQ(tokens[0].last_used_at, 150);
  EXPECT_TRUE(reopened.DeleteToken("tok_1"));
  EXPECT_FALSE(reopened.DeleteToken("tok_1"));
  sqlite::Database raw(path_);
  auto columns = raw.Prepare("SELECT name FROM pragma_table_info('access_tokens')");
  while (columns.Step()) {
    if (columns.Text(0).find("token") != std::string::npos) {
      EXPECT_EQ(columns.Text(0), "token_sha256");
    }
  }
}

TEST_F(StoreTest, NamesAreUniquePerOwnerAndKeptByUid) {
  Store store(path_);
  Sandbox a = MakeSandbox();
  a.owner = "uid:1001";
  a.name = "b-c";
  store.Insert(a);
  EXPECT_EQ(store.Get(a.id)->name, "b-c");
  // The older tool's USER-NAME domains collided here; owners by uid do not.
  Sandbox other = MakeSandbox();
  other.owner = "uid:1002";
  other.name = "b-c";
  EXPECT_NO_THROW(store.Insert(other));
  Sandbox again = MakeSandbox();
  again.owner = "uid:1001";
  again.name = "b-c";
  try {
    store.Insert(again);
    FAIL() << "a second b-c for uid 1001";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr(a.id.str()));
  }
  Sandbox unnamed1 = MakeSandbox(), unnamed2 = MakeSandbox();
  unnamed1.owner = unnamed2.owner = "uid:1001";
  store.Insert(unnamed1);
  EXPECT_NO_THROW(store.Insert(unnamed2));
}

TEST_F(StoreTest, TheOwnerMemoryLimitCountsThatOwnersGuests) {
  Store store(path_);
  Sandbox a = MakeSandbox();
  a.owner = "uid:7";
  a.spec.memory_mib = 600;
  store.Insert(a, std::nullopt, std::nullopt, std::nullopt, 0, 1024);
  Sandbox b = MakeSandbox();
  b.owner = "uid:8";
  b.spec.memory_mib = 600;
  store.Insert(b, std::nullopt, std::nullopt, std::nullopt, 0, 1024);
  Sandbox a2 = MakeSandbox();
  a2.owner = "uid:7";
  a2.spec.memory_mib = 600;
  try {
    store.Insert(a2, std::nullopt, std::nullopt, std::nullopt, 0, 1024);
    FAIL() << "uid 7 went past 1024 MiB";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("600 of 1024 MiB"));
  }
}

TEST_F(StoreTest, AutostartEntriesPersist) {
  {
    Store store(path_);
    store.SetAutostart(1001, "web", true);
    store.SetAutostart(1001, "web", true);  // idempotent
    store.SetAutostart(1002, "db", true);
    store.SetAutostart(1002, "db", false);
  }
  Store reopened(path_);
  EXPECT_EQ(reopened.ListAutostart(),
            (std::vector<std::pair<std::uint32_t, std::string>>{{1001, "web"}}));
}

TEST_F(StoreTest, TheOwnerLimitCountsOnlyThatOwnersSandboxes) {
  Store store(path_);
  Sandbox a = MakeSandbox();
  a.owner = "token:tok_a";
  store.Insert(a, 10, 1);
  Sandbox b = MakeSandbox();
  b.owner = "token:tok_b";
  store.Insert(b, 10, 1);  // another owner: allowed
  Sandbox a2 = MakeSandbox();
  a2.owner = "token:tok_a";
  try {
    store.Insert(a2, 10, 1);
    FAIL() << "inserted over the owner's limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("limit of 1"));
  }
  EXPECT_EQ(store.Count(), 2u);
}

TEST_F(StoreTest, PausedSandboxesFreeTheirMemoryAndHaveTheirOwnLimit) {
  Store store(path_);
  // Budget 700: two of 256 + 64 fit, a third does not.
  Sandbox a = MakeSandbox(), b = MakeSandbox(), c = MakeSandbox();
  for (Sandbox* s : {&a, &b}) {
    store.Insert(*s, 100, std::nullopt, 700, 64);
    store.Transition(s->id, SandboxState::kProvisioning);
    store.Transition(s->id, SandboxState::kReady);
  }
  EXPECT_THROW(store.Insert(c, 100, std::nullopt, 700, 64), Error);
  Sandbox paused = *store.Get(a.id);
  paused.paused_at = NowUnix();
  paused.ttl_left_seconds = 1234;
  paused = store.Move(paused, SandboxState::kPaused, {1, std::nullopt, 0});
  EXPECT_EQ(store.Get(a.id)->state, SandboxState::kPaused);
  EXPECT_EQ(store.Get(a.id)->ttl_left_seconds, 1234);
  EXPECT_EQ(store.Get(a.id)->paused_at, paused.paused_at);
  // Its memory is free: another fits now, and the paused one cannot come back.
  store.Insert(c, 100, std::nullopt, 700, 64);
  try {
    store.Move(paused, SandboxState::kReady, {std::nullopt, 700, 64});
    ADD_FAILURE() << "resumed past the budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("memory budget"));
  }
  EXPECT_EQ(store.Get(a.id)->state, SandboxState::kPaused);  // unchanged by the refusal
  // One paused per owner: the second is refused and stays ready.
  try {
    store.Move(*store.Get(b.id), SandboxState::kPaused, {1, std::nullopt, 0});
    ADD_FAILURE() << "paused past the owner's limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("limit of 1 paused"));
  }
  EXPECT_EQ(store.Get(b.id)->state, SandboxState::kReady);
  // Only ready <-> paused: a provisioning sandbox cannot be paused.
  EXPECT_THROW(store.Move(*store.Get(c.id), SandboxState::kPaused, {}), Error);
  store.Delete(c.id);
  paused.paused_at.reset();
  store.Move(paused, SandboxState::kReady, {std::nullopt, 700, 64});
  EXPECT_EQ(store.Get(a.id)->state, SandboxState::kReady);
  EXPECT_FALSE(store.Get(a.id)->paused_at);
}

TEST_F(StoreTest, TheHostMemoryBudgetCountsEverySandboxAndHoldsUnderConcurrency) {
  // 4096 MiB for all, 256 + 64 overhead each: 12 fit, never 13, however
  // many ask at once.
  Store store(path_);
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        try {
          store.Insert(MakeSandbox(), 100, std::nullopt, 4096, 64);
          ++accepted;
        } catch (const Error& e) {
          EXPECT_THAT(e.what(), HasSubstr("memory budget"));
          if (e.code() == ErrorCode::kResourceExhausted) ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 12);
  EXPECT_EQ(refused.load(), 8);
  // A smaller one still fits in what is left (4096 - 12 * 320 = 256).
  Sandbox small = MakeSandbox();
  small.spec.memory_mib = 128;
  EXPECT_NO_THROW(store.Insert(small, 100, std::nullopt, 4096, 64));
}

}  // namespace
}  // namespace ephemera

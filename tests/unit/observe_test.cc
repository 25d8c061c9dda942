// Metrics, the event feed, hooks, and the CLI's events and top: what
// operators watch the daemon with.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "cli/observe_commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/metrics.h"
#include "core/subprocess.h"
#include "daemon/hooks.h"
#include "daemon/logging.h"
#include "store/event_feed.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

TEST(MetricsTest, FamiliesRenderInTheTextFormatWithEscapedLabelsAndCumulativeBuckets) {
  MetricsRegistry registry;
  CounterFamily& requests = registry.Counter("x_requests_total", "Requests.\nBy door.", {"door"});
  registry.Counter("x_plain_total", "No labels.");
  HistogramFamily& phases = registry.Histogram("x_seconds", "Time.", {"phase"}, {0.5, 1, 5});
  requests.Add({"socket"});
  requests.Add({"socket"}, 2);
  requests.Add({"a \"b\"\\c\nd"});
  phases.Observe({"boot"}, 0.2);
  phases.Observe({"boot"}, 0.7);
  phases.Observe({"boot"}, 9);
  registry.AddCollector([](MetricsWriter& out) {
    out.Family("x_sandboxes", "gauge", "Sandboxes.");
    out.Sample({{"state", "ready"}}, 3);
    out.Sample({{"state", "paused"}}, 0);
  });
  const std::string text = registry.Render();
  EXPECT_NE(text.find("# HELP x_requests_total Requests.\\nBy door.\n"
                      "# TYPE x_requests_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("x_requests_total{door=\"socket\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_requests_total{door=\"a \\\"b\\\"\\\\c\\nd\"} 1\n"), std::string::npos)
      << text;
  // A family without labels shows 0 before its first count.
  EXPECT_NE(text.find("x_plain_total 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_bucket{phase=\"boot\",le=\"0.5\"} 1\n"
                      "x_seconds_bucket{phase=\"boot\",le=\"1\"} 2\n"
                      "x_seconds_bucket{phase=\"boot\",le=\"5\"} 2\n"
                      "x_seconds_bucket{phase=\"boot\",le=\"+Inf\"} 3\n"
                      "x_seconds_sum{phase=\"boot\"} 9.9\n"
                      "x_seconds_count{phase=\"boot\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE x_sandboxes gauge\nx_sandboxes{state=\"ready\"} 3\n"
                      "x_sandboxes{state=\"paused\"} 0\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(requests.Value({"socket"}), 3);
  EXPECT_EQ(phases.Count({"boot"}), 3u);
}

TEST(MetricsTest, BadNamesWrongLabelCountsAndDecreasesAreBugs) {
  MetricsRegistry registry;
  EXPECT_THROW(registry.Counter("0bad", "x"), Error);
  EXPECT_THROW(registry.Counter("x_total", "x", {"le"}), Error);
  EXPECT_THROW(registry.Counter("x_total", "x", {"__x"}), Error);
  EXPECT_THROW(registry.Histogram("x", "x", {}, {2, 1}), Error);
  CounterFamily& c = registry.Counter("ok_total", "x", {"a"});
  EXPECT_THROW(c.Add({}), Error);
  EXPECT_THROW(c.Add({"v"}, -1), Error);
  EXPECT_EQ(MetricValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(MetricValue(0.25), "0.25");
  EXPECT_EQ(MetricValue(12), "12");
}

Event MakeEvent(std::int64_t seq, std::string kind = "ready") {
  return Event{seq, 1, "id", std::move(kind), "detail", ""};
}

TEST(EventFeedTest, FollowersGetEventsInOrderAndTheLaggardIsToldToResume) {
  EventFeed feed;
  auto fast = feed.Subscribe(100);
  auto slow = feed.Subscribe(2);
  EXPECT_EQ(feed.followers(), 2u);
  for (int i = 1; i <= 3; ++i) feed.Publish(MakeEvent(i));
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(fast->Next(0ms)->seq, i);
  EXPECT_FALSE(fast->Next(10ms));
  // What it has queued is still read, then it learns it fell behind.
  EXPECT_EQ(slow->Next(0ms)->seq, 1);
  EXPECT_EQ(slow->Next(0ms)->seq, 2);
  try {
    slow->Next(0ms);
    ADD_FAILURE() << "no lag reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_NE(std::string(e.what()).find("resume from the log"), std::string::npos);
  }
  slow.reset();
  EXPECT_EQ(feed.followers(), 1u);
}

TEST(EventFeedTest, ClosingWakesAWaitingFollowerButListenersStay) {
  EventFeed feed;
  std::vector<std::int64_t> heard;
  feed.AddListener([&](const Event& e) { heard.push_back(e.seq); });
  auto follower = feed.Subscribe();
  std::thread closer([&] {
    std::this_thread::sleep_for(50ms);
    feed.Close();
  });
  const auto start = std::chrono::steady_clock::now();
  try {
    follower->Next(10s);
    ADD_FAILURE() << "no end";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  closer.join();
  EXPECT_THROW(feed.Subscribe(), Error);
  feed.Publish(MakeEvent(7));
  EXPECT_EQ(heard, std::vector<std::int64_t>{7});
}

TEST(RunProcessTest, StdinIsFedAndATimeoutKillsTheWholeGroup) {
  ProcessResult r = RunProcess({"/bin/sh", "-c", "wc -c"}, RunOptions{5s, 1024, "12345", false});
  EXPECT_EQ(r.out, "5\n");
  // A program that never reads a large input still finishes.
  r = RunProcess({"/bin/true"}, RunOptions{5s, 1024, std::string(1 << 20, 'x'), false});
  EXPECT_TRUE(r.ok());
  test::TempDir dir;
  const std::string marker = (dir.path() / "child").string();
  const auto start = std::chrono::steady_clock::now();
  try {
    RunProcess({"/bin/sh", "-c", "(sleep 1; touch " + marker + ") & sleep 30"},
               RunOptions{300ms, 1024, std::nullopt, true});
    ADD_FAILURE() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  std::this_thread::sleep_for(1500ms);
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the background child outlived the timeout";
}

// A hook script in `dir` that runs `body`.
std::filesystem::path Script(const test::TempDir& dir, const std::string& name,
                             const std::string& body) {
  const auto path = dir.path() / name;
  test::WriteBytes(path, "#!/bin/sh\n" + body + "\n");
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

std::string WaitForFile(const std::filesystem::path& path) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(50ms);  // written whole
  return std::filesystem::exists(path) ? ReadFile(path) : "";
}

TEST(HooksTest, EachEventsHooksGetItAsJsonOnStdinAndItsTypeAsArgument) {
  test::TempDir dir;
  HooksConfig config;
  const auto out = dir.path() / "out";
  config.on["destroyed"] = {Script(dir, "h", "cat > " + out.string() + ".$1")};
  config.on["*"] = {Script(dir, "all", "cat >> " + out.string() + ".all")};
  MetricsRegistry metrics;
  Hooks hooks(config, &metrics);
  Event e{42, 1000, "sb-1", "destroyed", "destroyed by request", "request"};
  hooks.OnEvent(e);
  json got = json::parse(WaitForFile(out.string() + ".destroyed"));
  EXPECT_EQ(got["seq"], 42);
  EXPECT_EQ(got["type"], "destroyed");
  EXPECT_EQ(got["sandbox"], "sb-1");
  EXPECT_EQ(got["cause"], "request");
  hooks.OnEvent(Event{43, 1000, "sb-1", "ready", "", ""});
  hooks.Stop();
  const std::string all = ReadFile(out.string() + ".all");
  EXPECT_NE(all.find("\"seq\":42"), std::string::npos);
  EXPECT_NE(all.find("\"seq\":43"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(out.string() + ".ready"));  // only "*" took it
  EXPECT_NE(metrics.Render().find("ephemera_hooks_total{event=\"destroyed\",result=\"ok\"} 2"),
            std::string::npos)
      << metrics.Render();
}

TEST(HooksTest, ASlowHookIsKilledAtItsTimeoutAndAFullQueueDropsWithoutWaiting) {
  test::TempDir dir;
  HooksConfig config;
  const auto started = dir.path() / "started";
  config.on["ready"] = {Script(dir, "slow", "touch " + started.string() + "; sleep 30")};
  config.timeout_seconds = 1;
  config.max_running = 1;
  config.max_queued = 2;
  MetricsRegistry metrics;
  Hooks hooks(config, &metrics);
  hooks.OnEvent(MakeEvent(1));
  WaitForFile(started);  // the one worker runs it
  const auto start = std::chrono::steady_clock::now();
  for (int i = 2; i <= 6; ++i) hooks.OnEvent(MakeEvent(i));
  // Queuing never waits for a hook.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  const std::string timeout = "ephemera_hooks_total{event=\"ready\",result=\"timeout\"} 1";
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metrics.Render().find(timeout) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  const std::string text = metrics.Render();
  EXPECT_NE(text.find("ephemera_hooks_total{event=\"ready\",result=\"timeout\"} 1"),
            std::string::npos)
      << text;
  // One ran, two were queued: three of six dropped.
  EXPECT_NE(text.find("ephemera_hooks_total{event=\"ready\",result=\"dropped\"} 3"),
            std::string::npos)
      << text;
}

TEST(HooksTest, BeforeCreateAllowsOnZeroAndRefusesOnAnythingElseWithItsReason) {
  test::TempDir dir;
  HooksConfig config;
  const auto seen = dir.path() / "seen";
  config.before_create = Script(dir, "policy",
                                "tee " + seen.string() +
                                    " | grep -q '\"owner\":\"alice\"' && exit 0\n"
                                    "echo \"only alice may create\"; exit 3");
  config.before_create_timeout_seconds = 1;
  Hooks hooks(config, nullptr);
  ASSERT_TRUE(hooks.has_before_create());
  SandboxSpec spec;
  spec.image = "default";
  CreateRequest alice;
  alice.owner = "alice";
  EXPECT_EQ(hooks.BeforeCreate(alice, spec), std::nullopt);
  json input = json::parse(ReadFile(seen));
  EXPECT_EQ(input["type"], "before_create");
  EXPECT_EQ(input["request"]["image"], "default");
  CreateRequest bob;
  bob.owner = "bob";
  EXPECT_EQ(hooks.BeforeCreate(bob, spec),
            "refused by the before_create hook: only alice may create");

  HooksConfig slow = config;
  slow.before_create = Script(dir, "slow", "sleep 30");
  Hooks slow_hooks(slow, nullptr);
  auto start = std::chrono::steady_clock::now();
  auto refusal = slow_hooks.BeforeCreate(alice, spec);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->find("did not answer within 1 s"), std::string::npos) << *refusal;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);

  HooksConfig missing = config;
  missing.before_create = dir.path() / "absent";
  Hooks missing_hooks(missing, nullptr);
  EXPECT_TRUE(missing_hooks.BeforeCreate(alice, spec));  // cannot run: refused
}

TEST(SseParserTest, MessagesSplitAnywhereComeWholeAndCommentsAreSkipped) {
  std::vector<cli::SseMessage> got;
  cli::SseParser parser([&](const cli::SseMessage& m) { got.push_back(m); });
  const std::string stream =
      ": ephemera events\n\nid: 1\nevent: ready\ndata: {\"a\":1}\n\n: keep-alive\n\n"
      "id: 2\r\nevent: destroyed\r\ndata: x\r\ndata: y\r\n\r\n";
  for (char c : stream) parser.Feed(std::string_view(&c, 1));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, "1");
  EXPECT_EQ(got[0].event, "ready");
  EXPECT_EQ(got[0].data, "{\"a\":1}");
  EXPECT_EQ(got[1].event, "destroyed");
  EXPECT_EQ(got[1].data, "x\ny");
}

TEST(TopTest, AFrameShowsCpuFromTwoSamplesAndHumanSizes) {
  json before = {{"at_ms", 10000},
                 {"sandboxes", {{{"id", "aaaaaaaa-1111"}, {"cpu_seconds", 1.0}}}}};
  json now = {{"at_ms", 12000},
              {"sandboxes",
               {{{"id", "aaaaaaaa-1111"},
                 {"name", "web"},
                 {"kind", "vm"},
                 {"state", "ready"},
                 {"cpu_seconds", 2.0},
                 {"memory_bytes", 300 * 1024 * 1024},
                 {"received_bytes", 1536},
                 {"sent_bytes", 10},
                 {"created_at", 12 - 125},
                 {"expires_at", 12 + 3600}}}}};
  const std::string frame = cli::RenderTop(before, now, 200);
  EXPECT_NE(frame.find("1 sandbox(es), CPU 50.0%, memory 300.0M"), std::string::npos) << frame;
  EXPECT_NE(frame.find("aaaaaaaa-111 web"), std::string::npos) << frame;
  EXPECT_NE(frame.find("50.0"), std::string::npos);
  EXPECT_NE(frame.find("1.5K"), std::string::npos);
  EXPECT_NE(frame.find("2m05s"), std::string::npos) << frame;
  EXPECT_NE(frame.find("1h00m"), std::string::npos) << frame;
  // Without a first sample there is no CPU figure yet.
  EXPECT_NE(cli::RenderTop(json(), now, 200).find("   -  "), std::string::npos);
  EXPECT_EQ(cli::HumanBytes(0), "0B");
  EXPECT_EQ(cli::HumanBytes(3.0 * (1ull << 30)), "3.0G");
  EXPECT_EQ(cli::HumanDuration(42), "42s");
  EXPECT_EQ(cli::HumanDuration(90000), "1d01h");
}

TEST(LoggingTest, JournalFieldsCarryTheThreadsSandboxOwnerAndPhase) {
  const std::string id = "0b5ad6c2-8f7e-4f6e-9a59-5d1f0c9e2a11";
  auto fields = JournalFields("plain", spdlog::level::warn, LogScope::Current());
  EXPECT_EQ(fields, (std::vector<std::string>{"MESSAGE=plain", "PRIORITY=4",
                                              "SYSLOG_IDENTIFIER=ephemerad"}));
  {
    LogScope scope(id, "uid:1000", "network");
    LogScope::SetPhase("provision");
    fields = JournalFields("x", spdlog::level::info, LogScope::Current());
    EXPECT_EQ(fields,
              (std::vector<std::string>{"MESSAGE=x", "PRIORITY=6", "SYSLOG_IDENTIFIER=ephemerad",
                                        "SANDBOX_ID=" + id, "OWNER=uid:1000", "PHASE=provision"}));
    {
      LogScope inner("other", "alice");
      EXPECT_EQ(LogScope::Current().sandbox, "other");
    }
    EXPECT_EQ(LogScope::Current().phase, "provision");  // the outer scope is back
  }
  EXPECT_TRUE(LogScope::Current().sandbox.empty());
  // Without a scope, a sandbox the message names is taken.
  fields = JournalFields("reaper: sandbox " + id + ": its VM is gone", spdlog::level::err, {});
  EXPECT_EQ(fields.back(), "SANDBOX_ID=" + id);
  EXPECT_EQ(fields[1], "PRIORITY=3");
  EXPECT_EQ(SandboxNamedIn("sandbox 0b5ad6c2: short"), "");
  EXPECT_EQ(SandboxNamedIn("no sandbox here, sandbox " + id), id);
}

}  // namespace
}  // namespace ephemera

int main(int argc, char** argv) {
  // A hook that does not read its stdin must not kill the test with SIGPIPE
  // (the daemon ignores it too).
  ::signal(SIGPIPE, SIG_IGN);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// What an operator watches, end to end with the real daemon and container
// sandboxes (crun): /metrics on the socket and on its own listener, the
// event stream through `ephemera events --follow`, a hook that outlives its
// timeout while the create it follows succeeds, and a before_create hook
// that refuses a create.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

// The value of one series in a scrape; 0 when it is not there.
double Series(const std::string& scrape, const std::string& series) {
  std::istringstream lines(scrape);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  }
  return 0;
}

// A background `ephemera events --follow --json`, its output in a file.
class Follower {
 public:
  Follower(std::vector<std::string> argv, const fs::path& out) {
    UniqueFd file(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    process_ = Spawn(SpawnSpec{std::move(argv), {{file.get(), 1}}});
  }
  ~Follower() {
    ::kill(process_.pid, SIGTERM);
    ::waitpid(process_.pid, nullptr, 0);
  }

 private:
  SpawnedProcess process_;
};

class ObserveTest : public test::DaemonTest {
 protected:
  ObserveTest() {
    // ready: a hook that outlives its 1 s timeout; destroyed: one that keeps
    // what it was given; before_create: a policy that refuses one run id.
    Script("slow", "sleep 30");
    Script("record", "cat > " + (hooks_.path() / "destroyed.json").string());
    Script("policy",
           "if grep -q '\"run_id\":\"forbidden\"'; then echo 'run forbidden is reserved'; exit 1; "
           "fi");
  }
  void SetUp() override {
    fs::permissions(state_.path(), fs::perms::others_exec, fs::perm_options::add);
    DaemonTest::SetUp();
  }
  std::string ExtraConfig() const override {
    const std::string dir = hooks_.path().string();
    return "hooks: {on: {ready: [" + dir + "/slow], destroyed: [" + dir +
           "/record]}, timeout_seconds: 1, before_create: " + dir + "/policy}\n" +
           "metrics: {listen: 127.0.0.1:0}\nevents: {max_subscribers: 2}\n";
  }
  void Script(const std::string& name, const std::string& body) {
    const fs::path path = hooks_.path() / name;
    WriteFileAtomic(path, "#!/bin/sh\n" + body + "\n", 0700);
  }
  std::string Scrape() {
    test::CurlResult r = Api("GET", "/metrics");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    return r.body;
  }
  // Waits until `series` reaches `value` (hooks run in the background).
  void ExpectSeriesReaches(const std::string& series, double value) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (Series(Scrape(), series) < value && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(Series(Scrape(), series), value) << series;
  }

  test::TempDir hooks_;
};

TEST_F(ObserveTest, MetricsEventsAndHooksFollowSandboxesFromCreateToDestroy) {
  const std::string creates = "ephemera_creates_total{kind=\"container\",start=\"boot\"}";
  const std::string ready = "ephemera_sandboxes{state=\"ready\",kind=\"container\"}";
  std::string before = Scrape();
  EXPECT_EQ(Series(before, creates), 0);
  EXPECT_EQ(Series(before, ready), 0);
  EXPECT_THAT(before, HasSubstr("# TYPE ephemera_create_phase_seconds histogram"));

  const fs::path follow_out = state_.path() / "events.ndjson";
  auto follower = std::make_unique<Follower>(Cli({"events", "--follow", "--json"}), follow_out);
  auto second = std::make_unique<Follower>(Cli({"events", "--follow"}), state_.path() / "second");
  // Past events.max_subscribers (once both followers hold theirs): refused,
  // not queued.
  test::CurlResult third;
  for (int i = 0; i < 100; ++i) {
    third = Api("GET", "/v1/events", {"-m", "5", "--get", "--data", "follow=0"});
    if (third.status == 429) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(third.status, 429) << third.body;
  EXPECT_THAT(third.body, HasSubstr("events.max_subscribers"));

  // The ready hook sleeps past its timeout; the create is not held by it.
  json s = Create({"--kind", "container", "--memory", "128"});
  const std::string id = s["id"];
  std::string during = Scrape();
  EXPECT_EQ(Series(during, creates), 1);
  EXPECT_EQ(Series(during, ready), 1);
  EXPECT_EQ(
      Series(during, "ephemera_create_phase_seconds_count{kind=\"container\",phase=\"total\"}"), 1);
  EXPECT_GT(
      Series(during, "ephemera_sandbox_memory_bytes{sandbox=\"" + id + "\",kind=\"container\"}"),
      0);
  EXPECT_THAT(during, HasSubstr("ephemera_sandbox_cpu_seconds_total{sandbox=\"" + id));
  EXPECT_GE(Series(during,
                   "ephemera_requests_total{door=\"socket\",verb=\"POST "
                   "/v1/sandboxes\",status=\"201\"}"),
            1);
  ExpectSeriesReaches("ephemera_hooks_total{event=\"ready\",result=\"timeout\"}", 1);
  EXPECT_THAT(DaemonLog(), HasSubstr("hook " + hooks_.path().string() + "/slow (ready)"));

  // The metrics listener serves the same, and nothing else.
  json status = Api("GET", "/v1/status").Json();
  const std::string listen = status["front_doors"]["metrics"]["listen"];
  test::CurlResult remote = test::Curl({"http://" + listen + "/metrics"});
  EXPECT_EQ(remote.status, 200);
  EXPECT_EQ(Series(remote.body, creates), 1);
  EXPECT_EQ(test::Curl({"http://" + listen + "/v1/status"}).status, 404);
  EXPECT_EQ(test::Curl({"-X", "POST", "http://" + listen + "/metrics"}).status, 405);

  // The usage route that `ephemera top` reads, and top itself.
  json usage = Api("GET", "/v1/usage").Json();
  ASSERT_EQ(usage["sandboxes"].size(), 1u);
  EXPECT_EQ(usage["sandboxes"][0]["id"], id);
  EXPECT_GT(usage["sandboxes"][0]["memory_bytes"].get<double>(), 0);
  EXPECT_THAT(Output(Cli({"top", "--once", "--interval", "0.5"})),
              HasSubstr(id.substr(0, 12) + " -              container ready"));

  Output(Cli({"destroy", id}));
  // The destroyed hook got the event.
  const fs::path recorded = hooks_.path() / "destroyed.json";
  for (int i = 0; i < 100 && (!fs::exists(recorded) || fs::file_size(recorded) == 0); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  json destroyed = json::parse(ReadFile(recorded));
  EXPECT_EQ(destroyed["type"], "destroyed");
  EXPECT_EQ(destroyed["sandbox"], id);
  EXPECT_EQ(destroyed["cause"], "request");
  std::string after = Scrape();
  EXPECT_EQ(Series(after, ready), 0);
  EXPECT_EQ(Series(after, "ephemera_removals_total{event=\"destroyed\",cause=\"request\"}"), 1);

  // The follower saw created, ready and destroyed, in order, as they came.
  std::this_thread::sleep_for(300ms);
  follower.reset();
  EXPECT_THAT(ReadFile(state_.path() / "second"), HasSubstr("destroyed by request [request]"));
  second.reset();
  // Their streams end within a second of their clients, freeing the slots.
  std::this_thread::sleep_for(1500ms);
  std::vector<std::string> seen;
  std::istringstream lines(ReadFile(follow_out));
  for (std::string line; std::getline(lines, line);) {
    json event = json::parse(line);
    if (event.value("sandbox", "") == id) seen.push_back(event["type"]);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"created", "ready", "destroyed"}));
  // The log from the start, which `ephemera events` prints and ends.
  std::string log = Output(Cli({"events"}));
  EXPECT_THAT(log, HasSubstr("daemon_started"));
  EXPECT_THAT(log,
              ::testing::ContainsRegex("destroyed +" + id + " destroyed by request \\[request\\]"));
  test::CurlResult since = Api("GET", "/v1/events?since=1&follow=0");
  EXPECT_EQ(since.status, 200);
  EXPECT_EQ(since.headers["content-type"], "text/event-stream");
  EXPECT_THAT(since.body, Not(HasSubstr("id: 1\n")));
  EXPECT_THAT(since.body, HasSubstr("event: destroyed\ndata: {"));
  EXPECT_EQ(Api("GET", "/v1/events?since=-1").status, 400);
  ExpectNothingLeft();
}

TEST_F(ObserveTest, ABeforeCreateHookRefusesWithItsReasonAndNothingIsMade) {
  ProcessResult refused = RunProcess(
      Cli({"create", "--kind", "container", "--run-id", "forbidden", "--name", "m1"}), 60s);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.err,
              HasSubstr("refused by the before_create hook: run forbidden is reserved"));
  test::CurlResult api =
      Api("POST", "/v1/sandboxes",
          {"--data-binary", R"({"kind":"container","run_id":"forbidden","name":"m1"})"});
  EXPECT_EQ(api.status, 403) << api.body;
  EXPECT_EQ(Series(Scrape(), "ephemera_create_failures_total{kind=\"container\",cause=\"vetoed\"}"),
            2);
  EXPECT_EQ(Series(Scrape(), "ephemera_hooks_total{event=\"before_create\",result=\"refused\"}"),
            2);
  ExpectNothingLeft();
  // Another create goes through the same hook and is let be.
  json s = Create({"--kind", "container", "--memory", "128"});
  EXPECT_EQ(Series(Scrape(), "ephemera_hooks_total{event=\"before_create\",result=\"allowed\"}"),
            1);
  Output(Cli({"destroy", s["id"]}));
}

}  // namespace
}  // namespace ephemera

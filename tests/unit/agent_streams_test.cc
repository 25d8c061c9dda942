// The agent's streams (protocol 3) on this host: real processes, real
// files, the event loop driven by the test.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "agent/error.h"
#include "agent/fields.h"
#include "agent/protocol.h"
#include "agent/streams.h"
#include "tests/unit/test_files.h"

namespace ephemera::agent {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class AgentStreamsTest : public ::testing::Test {
 protected:
  // Runs the loop until `done` holds for the events so far (or 10 s).
  void Pump(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "events so far: " << Dump();
      std::vector<pollfd> fds;
      streams_.AddPollFds(fds);
      int timeout = streams_.PollTimeoutMs();
      ::poll(fds.data(), fds.size(), timeout < 0 || timeout > 20 ? 20 : timeout);
      streams_.OnPolled(fds, 0);
      streams_.Tick();
      for (const std::string& line : streams_.TakeEvents()) events_.push_back(json::parse(line));
    }
  }
  std::string Dump() const {
    std::string text;
    for (const json& event : events_) text += event.dump().substr(0, 200) + "\n";
    return text;
  }
  json Start(uint64_t id, json request) {
    request["id"] = id;
    return streams_.Handle(id, request["op"].get<std::string>(), request);
  }
  void Call(json request) {
    request["id"] = next_call_++;
    streams_.Handle(request["id"], request["op"].get<std::string>(), request);
  }
  const json* EndOf(uint64_t id) const {
    for (const json& event : events_) {
      if (event["stream"] == id && event.contains("end")) return &event;
    }
    return nullptr;
  }
  std::string Output(uint64_t id, const char* name) const {
    std::string out;
    for (const json& event : events_) {
      if (event["stream"] == id && event.contains(name)) {
        out += *DecodeBase64(event[name].get<std::string>());
      }
    }
    return out;
  }
  void Run(uint64_t id, json request) {
    Start(id, std::move(request));
    Pump([&] { return EndOf(id) != nullptr; });
  }

  test::TempDir dir_;
  Streams streams_{Root("/")};
  std::vector<json> events_;
  uint64_t next_call_ = 1000;
};

TEST_F(AgentStreamsTest, ExecGivesBothStreamsAndTheExitCode) {
  Run(1, {{"op", "exec"}, {"argv", {"sh", "-c", "echo out; echo err >&2; exit 7"}}});
  EXPECT_EQ(Output(1, "stdout"), "out\n");
  EXPECT_EQ(Output(1, "stderr"), "err\n");
  EXPECT_EQ((*EndOf(1))["exit"], 7);
  EXPECT_EQ(streams_.size(), 0u);
}

TEST_F(AgentStreamsTest, ExecTakesEnvironmentAndWorkingDirectory) {
  Run(1, {{"op", "exec"},
          {"argv", {"sh", "-c", "echo $GREETING; pwd"}},
          {"env", {{"GREETING", "hi there"}}},
          {"cwd", dir_.path().string()}});
  EXPECT_EQ(Output(1, "stdout"), "hi there\n" + dir_.path().string() + "\n");
}

TEST_F(AgentStreamsTest, StdinRoundTripsThroughTheProcess) {
  Start(1, {{"op", "exec"}, {"argv", {"cat"}}, {"stdin", true}});
  Call({{"op", "input"}, {"stream", 1}, {"data", EncodeBase64("hello ")}});
  Call({{"op", "input"}, {"stream", 1}, {"data", EncodeBase64("world")}, {"eof", true}});
  Pump([&] { return EndOf(1) != nullptr; });
  EXPECT_EQ(Output(1, "stdout"), "hello world");
  EXPECT_EQ((*EndOf(1))["exit"], 0);
  uint64_t written = 0;
  for (const json& event : events_) written += event.value("written", 0u);
  EXPECT_EQ(written, 11u);
}

TEST_F(AgentStreamsTest, ATimeoutKillsTheProcessAndItsChildren) {
  Start(1,
        {{"op", "exec"}, {"argv", {"sh", "-c", "sleep 100 & echo $!; wait"}}, {"timeout_ms", 300}});
  Pump([&] { return EndOf(1) != nullptr; });
  EXPECT_EQ((*EndOf(1))["signal"], SIGKILL);
  EXPECT_EQ((*EndOf(1))["timed_out"], true);
  std::string child = Output(1, "stdout");
  ASSERT_FALSE(child.empty());
  child.pop_back();
  // The child was killed with its group: gone, or a zombie waiting for init
  // (a SIGKILL takes a moment to finish a process).
  std::string state;
  for (int i = 0; i < 100; ++i) {
    std::ifstream stat("/proc/" + child + "/stat");
    std::string pid, comm;
    state.clear();
    if (!(stat >> pid >> comm >> state) || state == "Z") break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(state.empty() || state == "Z")
      << "sleep " << child << " still runs (" << state << ")";
}

TEST_F(AgentStreamsTest, ASignalReachesTheProcess) {
  Start(1, {{"op", "exec"}, {"argv", {"sleep", "100"}}});
  Call({{"op", "signal"}, {"stream", 1}, {"signal", SIGTERM}});
  Pump([&] { return EndOf(1) != nullptr; });
  EXPECT_EQ((*EndOf(1))["signal"], SIGTERM);
  EXPECT_FALSE(EndOf(1)->contains("timed_out"));
}

TEST_F(AgentStreamsTest, ATerminalHasTheAskedSizeAndFollowsAResize) {
  Start(1, {{"op", "exec"},
            {"argv", {"sh", "-c", "stty size; read line; stty size"}},
            {"tty", true},
            {"rows", 30},
            {"cols", 100}});
  Pump([&] { return Output(1, "stdout").find("30 100") != std::string::npos; });
  Call({{"op", "resize"}, {"stream", 1}, {"rows", 40}, {"cols", 120}});
  Call({{"op", "input"}, {"stream", 1}, {"data", EncodeBase64("\n")}});
  Pump([&] { return EndOf(1) != nullptr; });
  EXPECT_NE(Output(1, "stdout").find("40 120"), std::string::npos) << Output(1, "stdout");
  EXPECT_EQ((*EndOf(1))["exit"], 0);
}

TEST_F(AgentStreamsTest, OutputWaitsForTheHostsAcks) {
  constexpr uint64_t kTotal = 3'000'000;
  Start(1, {{"op", "exec"}, {"argv", {"head", "-c", std::to_string(kTotal), "/dev/zero"}}});
  // Counted as events come (decoding everything again each time would be
  // quadratic, and slow under the sanitizers).
  size_t counted_events = 0;
  uint64_t counted_bytes = 0;
  auto sent = [&] {
    for (; counted_events < events_.size(); ++counted_events) {
      const json& event = events_[counted_events];
      if (event["stream"] == 1 && event.contains("stdout")) {
        counted_bytes += DecodeBase64(event["stdout"].get<std::string>())->size();
      }
    }
    return counted_bytes;
  };
  Pump([&] { return sent() >= Streams::kWindow; });
  std::this_thread::sleep_for(100ms);
  Pump([] { return true; });
  for (int i = 0; i < 5; ++i) {
    std::vector<pollfd> fds;
    streams_.AddPollFds(fds);
    streams_.OnPolled(fds, 0);
    streams_.Tick();
    for (const std::string& line : streams_.TakeEvents()) events_.push_back(json::parse(line));
  }
  EXPECT_LT(sent(), Streams::kWindow + Streams::kChunk) << "output past the window without acks";
  uint64_t acked = 0;
  Pump([&] {
    if (sent() > acked) {
      Call({{"op", "ack"}, {"stream", 1}, {"bytes", sent() - acked}});
      acked = sent();
    }
    return EndOf(1) != nullptr;
  });
  EXPECT_EQ(sent(), kTotal);
  ASSERT_NE(EndOf(1), nullptr);
  EXPECT_EQ((*EndOf(1))["exit"], 0);
}

TEST_F(AgentStreamsTest, AFileIsWrittenWithItsModeThenReadBack) {
  const std::string path = (dir_.path() / "out.bin").string();
  std::string content(300000, 'x');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7);
  Start(1, {{"op", "write"}, {"path", path}, {"mode", 0640}});
  Call({{"op", "input"}, {"stream", 1}, {"data", EncodeBase64(content.substr(0, 100000))}});
  EXPECT_FALSE(std::filesystem::exists(path)) << "visible before it is complete";
  Call({{"op", "input"},
        {"stream", 1},
        {"data", EncodeBase64(content.substr(100000))},
        {"eof", true}});
  Pump([&] { return EndOf(1) != nullptr; });
  EXPECT_EQ((*EndOf(1))["size"], content.size());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  json answer = Start(2, {{"op", "read"}, {"path", path}});
  EXPECT_EQ(answer["size"], content.size());
  uint64_t acked = 0;
  Pump([&] {
    uint64_t got = Output(2, "stdout").size();
    if (got > acked) Call({{"op", "ack"}, {"stream", 2}, {"bytes", got - acked}});
    acked = got;
    return EndOf(2) != nullptr;
  });
  EXPECT_EQ(Output(2, "stdout"), content);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_.path()),
                          std::filesystem::directory_iterator()),
            1)
      << "a temporary file stayed";
}

TEST_F(AgentStreamsTest, AWriteTheHostLeavesIsRemoved) {
  const std::string path = (dir_.path() / "half").string();
  Start(1, {{"op", "write"}, {"path", path}});
  Call({{"op", "input"}, {"stream", 1}, {"data", EncodeBase64("part")}});
  streams_.CloseAll();
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path()));
}

TEST_F(AgentStreamsTest, StatNamesTheType) {
  json answer = streams_.Handle(1, "stat", {{"id", 1}, {"op", "stat"}, {"path", dir_.path()}});
  EXPECT_EQ(answer["type"], "directory");
  EXPECT_THROW(streams_.Handle(2, "read", {{"id", 2}, {"op", "read"}, {"path", dir_.path()}}),
               FieldError);
  EXPECT_THROW(streams_.Handle(3, "stat", {{"id", 3}, {"op", "stat"}, {"path", "relative"}}),
               FieldError);
}

TEST_F(AgentStreamsTest, BadRequestsAreRefusedNamingTheField) {
  auto refusal = [&](json request) -> std::string {
    request["id"] = 9;
    try {
      streams_.Handle(9, request["op"], request);
    } catch (const AgentError& e) {
      return e.what();
    }
    return "accepted";
  };
  EXPECT_EQ(refusal({{"op", "exec"}}), "argv: missing");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", json::array()}}).substr(0, 5), "argv:");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", {"true"}}, {"user", "nosuchuser"}}),
            "user: no such user \"nosuchuser\"");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", {"no-such-program-here"}}}),
            "argv: cannot execute no-such-program-here: not found in PATH");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", {"true"}}, {"cwd", "/no/such/dir"}}),
            "cwd: cannot enter /no/such/dir: No such file or directory");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", {"true"}}, {"env", {{"1BAD", "x"}}}}),
            "env: \"1BAD\" is no name");
  EXPECT_EQ(refusal({{"op", "input"}, {"stream", 77}, {"data", ""}}),
            "stream: no such stream (it ended)");
  EXPECT_EQ(refusal({{"op", "exec"}, {"argv", {"true"}}, {"bogus", 1}}), "bogus: unknown field");
  EXPECT_EQ(streams_.size(), 0u);
}

}  // namespace
}  // namespace ephemera::agent

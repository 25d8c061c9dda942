// Answers in pieces: the server's chunk sink and the CLI's line reader
// together, over a real unix socket; and the progress lines as a user sees
// them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "cli/progress.h"
#include "client/api_client.h"
#include "core/fs.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using ::testing::HasSubstr;
namespace http = boost::beast::http;

HttpResponse JsonAnswer(const std::string& body) {
  HttpResponse r{http::status::ok, 11};
  r.set(http::field::content_type, "application/json");
  r.body() = body + "\n";
  return r;
}

TEST(StreamingTest, LinesArriveWhileTheHandlerWorksAndTheLastIsTheAnswer) {
  test::TempDir dir;
  const auto socket = dir.path() / "api.sock";
  std::promise<void> first_seen;
  auto seen = first_seen.get_future();
  HttpServer server(
      HttpListener::Unix(socket, 0600), {},
      HttpStreamingHandler([&](const HttpRequest& request, const Peer&, HttpChunkSink& sink) {
        if (request.target() == "/plain") return JsonAnswer(R"({"plain":true})");
        EXPECT_TRUE(sink.Send("application/x-ndjson", "{\"progress\":{\"n\":1}}\n"));
        // The client has the first line before the handler goes on.
        EXPECT_EQ(seen.wait_for(std::chrono::seconds(10)), std::future_status::ready);
        EXPECT_TRUE(sink.Send("application/x-ndjson", "{\"progress\":{\"n\":2}}\n"));
        if (request.target() == "/fails") {
          return JsonAnswer(R"({"error":{"code":"unavailable","message":"gone"}})");
        }
        return JsonAnswer(R"({"done":true})");
      }));
  client::ApiClient client(socket);
  std::vector<std::string> lines;
  nlohmann::json answer = client.Request("POST", "/stream", "", {}, [&](std::string_view line) {
    lines.emplace_back(line);
    if (lines.size() == 1) first_seen.set_value();
  });
  EXPECT_EQ(answer, nlohmann::json({{"done", true}}));
  EXPECT_EQ(lines, (std::vector<std::string>{R"({"progress":{"n":1}})", R"({"progress":{"n":2}})",
                                             R"({"done":true})"}));

  // An error after the stream began is still an error.
  std::promise<void> again;
  seen = again.get_future();
  try {
    client.Request("POST", "/fails", "", {}, [&](std::string_view line) {
      if (line.find("\"n\":1") != std::string_view::npos) again.set_value();
    });
    ADD_FAILURE() << "no error";
  } catch (const client::ApiError& e) {
    EXPECT_STREQ(e.what(), "gone");
  }
  // A handler that never sends answers as usual, to a streaming reader too.
  std::vector<std::string> plain_lines;
  EXPECT_EQ(client.Request("GET", "/plain", "", {},
                           [&](std::string_view line) { plain_lines.emplace_back(line); }),
            nlohmann::json({{"plain", true}}));
}

TEST(StreamingTest, ProgressReadsAsBytesOfLayersAndStripsControlCharacters) {
  using cli::PullProgressPrinter;
  EXPECT_EQ(PullProgressPrinter::Describe("docker://r/k:1", 2, 3, 1572864, 4194304, false),
            "docker://r/k:1: layer 2/3: 1.5 MiB of 4.0 MiB");
  EXPECT_EQ(PullProgressPrinter::Describe("docker://r/k:1", 1, 1, 512, 512, true),
            "docker://r/k:1: layer 1/1: 0.5 KiB, in the blob store");
  EXPECT_EQ(PullProgressPrinter::Describe("docker://r/k:1", 0, 0, 0, 0, false),
            "docker://r/k:1: resolving");
  EXPECT_EQ(PullProgressPrinter::Describe("x\033]0;pwned\007", 0, 0, 0, 0, false),
            "x?]0;pwned?: resolving");

  // Off a terminal: a line per finished layer, nothing for the rest.
  test::TempDir dir;
  const auto path = dir.path() / "out";
  std::FILE* out = std::fopen(path.c_str(), "w+");
  ASSERT_TRUE(out);
  {
    PullProgressPrinter printer(out, false);
    printer.Line(
        R"({"progress":{"reference":"docker://r/k:1","layer":1,"layers":2,"bytes":1024,"total":2048}})");
    printer.Line(
        R"({"progress":{"reference":"docker://r/k:1","layer":1,"layers":2,"bytes":2048,"total":2048}})");
    printer.Line(R"({"name":"kt"})");
    printer.Line("not json");
  }
  std::fclose(out);
  EXPECT_EQ(ReadFile(path), "docker://r/k:1: layer 1/2: 2.0 KiB of 2.0 KiB\n");
}

}  // namespace
}  // namespace ephemera

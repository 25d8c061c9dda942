// libephemera-client against a stand-in daemon: a real HTTP server on a
// unix socket whose handler answers as ephemerad's routes do (created
// sandbox, NDJSON exec, streamed download, errors).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "core/base64.h"
#include "ephemera/client.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using nlohmann::json;
namespace http = boost::beast::http;

HttpResponse Answer(http::status status, const json& body) {
  HttpResponse r{status, 11};
  r.set(http::field::content_type, "application/json");
  r.body() = body.dump() + "\n";
  return r;
}

class ClientLibraryTest : public ::testing::Test {
 protected:
  ClientLibraryTest()
      : server_(
            HttpListener::Unix(dir_.path() / "api.sock", 0600), {},
            HttpStreamingHandler([this](const HttpRequest& request, const Peer&,
                                        HttpChunkSink& sink) { return Handle(request, sink); })) {}

  HttpResponse Handle(const HttpRequest& request, HttpChunkSink& sink) {
    const std::string target(request.target());
    last_token_ = std::string(request["X-Ephemera-Token"]);
    if (request.method() == http::verb::post && target == "/v1/sandboxes") {
      return Answer(http::status::created,
                    {{"id", "sb-1"},
                     {"state", "ready"},
                     {"host", "127.0.0.1"},
                     {"port", 10022},
                     {"username", "user_1"},
                     {"password", "secret"},
                     {"token", "tok"},
                     {"memory_mib", json::parse(request.body())["memory_mib"]}});
    }
    if (target == "/v1/sandboxes/sb-1/exec") {
      last_exec_ = json::parse(request.body());
      sink.Send("application/x-ndjson", R"({"exec":{"id":"e1","pid":7}})"
                                        "\n");
      sink.Send("application/x-ndjson", json{{"stdout", Base64Encode("out\n")}}.dump() + "\n");
      sink.Send("application/x-ndjson", json{{"stderr", Base64Encode("err\n")}}.dump() + "\n");
      return Answer(http::status::ok, {{"exit", {{"code", 7}, {"timed_out", false}}}});
    }
    if (target == "/v1/sandboxes/sb-1/files?path=%2Ftmp%2Fwhole") {
      sink.Send("application/octet-stream", "first part, ");
      sink.Send("application/octet-stream", "second part");
      return HttpResponse{http::status::ok, 11};
    }
    if (target == "/v1/sandboxes/sb-1/files?path=%2Ftmp%2Fcut") {
      sink.Send("application/octet-stream", "only the start");
      sink.Abort();  // as a download that fails half-way
      return HttpResponse{http::status::ok, 11};
    }
    if (request.method() == http::verb::put &&
        target.rfind("/v1/sandboxes/sb-1/files?path=%2Ftmp%2Fsmall&mode=", 0) == 0) {
      last_upload_ = request.body();
      last_expect_ = std::string(request[http::field::expect]);
      return Answer(http::status::ok, {{"path", "/tmp/small"}});
    }
    if (request.method() == http::verb::delete_ && target == "/v1/sandboxes/sb-1") {
      return Answer(http::status::ok, {{"id", "sb-1"}, {"state", "destroyed"}});
    }
    return Answer(http::status::not_found,
                  {{"error", {{"code", "not_found"}, {"message", "no sandbox " + target}}}});
  }

  client::Client Client() {
    client::Options options;
    options.socket = dir_.path() / "api.sock";
    return client::Client(options);
  }

  test::TempDir dir_;
  std::string last_token_;
  json last_exec_;
  std::string last_upload_, last_expect_;
  HttpServer server_;
};

TEST_F(ClientLibraryTest, ARefusedUploadGetsTheServersAnswerNotABrokenPipe) {
  // Far more than the server takes (max_body) and than a socket buffers:
  // sent whole, it would meet a closed connection.
  const std::filesystem::path big = dir_.path() / "big";
  std::ofstream(big) << std::string(8 << 20, 'x');
  client::Client c = Client();
  try {
    c.Upload("sb-1", big, "/tmp/big");
    ADD_FAILURE() << "uploaded";
  } catch (const client::Error& e) {
    EXPECT_EQ(e.status(), 413u);
    EXPECT_STREQ(e.what(), "request body too large");
  }
  // One the server takes goes through the same 100 Continue.
  const std::filesystem::path small = dir_.path() / "small";
  std::ofstream(small) << "a small file";
  c.Upload("sb-1", small, "/tmp/small");
  EXPECT_EQ(last_upload_, "a small file");
  EXPECT_EQ(last_expect_, "100-continue");
}

TEST_F(ClientLibraryTest, CreateExecAndDestroyAsTheDaemonAnswers) {
  client::Client c = Client();
  client::Sandbox s = c.Create({{"memory_mib", 256}});
  EXPECT_EQ(s.id, "sb-1");
  EXPECT_EQ(s.port, 10022);
  EXPECT_EQ(s.password, "secret");
  EXPECT_EQ(s.token, "tok");
  EXPECT_EQ(s.record["memory_mib"], 256);

  client::ExecOptions options;
  options.stdin_data = "input";
  options.env = {{"A", "1"}};
  options.token = s.token;
  client::ExecResult run = c.Exec(s.id, {"sh", "-c", "x"}, options);
  EXPECT_EQ(run.out, "out\n");
  EXPECT_EQ(run.err, "err\n");
  EXPECT_EQ(run.exit_code, 7);
  EXPECT_FALSE(run.signal);
  EXPECT_EQ(last_exec_,
            (json{{"argv", {"sh", "-c", "x"}}, {"env", {{"A", "1"}}}, {"stdin", "input"}}));
  EXPECT_EQ(last_token_, "tok");

  std::string streamed;
  options.on_stdout = [&](std::string_view bytes) { streamed += bytes; };
  run = c.Exec(s.id, {"true"}, options);
  EXPECT_EQ(streamed, "out\n");
  EXPECT_EQ(run.out, "");

  c.Destroy(s.id, s.token);
  try {
    c.Show("nope");
    ADD_FAILURE() << "no error";
  } catch (const client::Error& e) {
    EXPECT_EQ(e.status(), 404u);
    EXPECT_STREQ(e.what(), "no sandbox /v1/sandboxes/nope");
  }
}

TEST_F(ClientLibraryTest, ADownloadIsWrittenWholeOrNotAtAll) {
  client::Client c = Client();
  const auto whole = dir_.path() / "whole";
  c.Download("sb-1", "/tmp/whole", whole);
  std::ifstream in(whole);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "first part, second part");

  const auto cut = dir_.path() / "cut";
  EXPECT_THROW(c.Download("sb-1", "/tmp/cut", cut), client::Error);
  EXPECT_FALSE(std::filesystem::exists(cut));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "cut.ephemera-part"));
}

}  // namespace
}  // namespace ephemera

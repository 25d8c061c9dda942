// Programs and files in a sandbox's guest (docs/api.md, "Exec and files").
// Output streams as the guest produces it: an exec answers NDJSON lines, a
// download the bytes; input streams in the same way (an upload's body, a
// process's stdin), through the agent's flow control, so that neither
// direction holds more than a window in the daemon's memory.
#include <signal.h>

#include <spdlog/spdlog.h>

#include "api/route_call.h"
#include "api/wire.h"
#include "core/base64.h"
#include "core/error.h"
#include "core/text.h"

namespace ephemera::routes {

namespace http = boost::beast::http;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kNdjson[] = "application/x-ndjson";
// Longer than any process may run: only the channel's end stops the wait.
constexpr auto kForever = std::chrono::hours(24 * 365);
// How long input waits for a guest that takes none.
constexpr auto kInputTimeout = std::chrono::seconds(60);
constexpr std::size_t kBodyPiece = 256 * 1024;

std::string Line(const json& value) { return value.dump() + "\n"; }

// The end of a process as the last NDJSON line.
json ExitToJson(const json& end) {
  if (end.contains("error")) {
    return {{"error", {{"code", "unavailable"}, {"message", end["error"]}}}};
  }
  json exit = json::object();
  if (end.contains("exit")) exit["code"] = end["exit"];
  if (end.contains("signal")) exit["signal"] = end["signal"];
  exit["timed_out"] = end.value("timed_out", false);
  return {{"exit", exit}};
}

GuestExec& ExecOf(const Call& call, std::shared_ptr<GuestExec>& holder, const char* doing) {
  SandboxId id = SandboxId::Parse(call.param);
  std::optional<std::string> token = ActingToken(call, id, doing);
  holder = call.c.engine->FindExec(id, std::string(call.param2), token);
  return *holder;
}

}  // namespace

HttpResponse RunExec(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  ParsedExec parsed = ParseExecRequest(call.request.body());
  std::optional<std::string> token = ActingToken(call, id, "running a program");
  if (call.sink == nullptr) {
    Fail(ErrorCode::kInvalidArgument, "exec answers in streamed lines: this door cannot");
  }
  std::shared_ptr<GuestExec> exec = call.c.engine->StartExec(id, parsed.request, token);
  AgentStream& stream = *exec->stream;
  if (parsed.stdin_data) {
    stream.Write(*parsed.stdin_data, Clock::now() + kInputTimeout);
    stream.CloseInput();
  }
  if (!call.sink->Send(kNdjson, Line({{"exec", {{"id", exec->id}, {"pid", exec->pid}}}}))) {
    stream.Signal(SIGKILL);
    return JsonResponse(200, json::object());
  }
  for (;;) {
    AgentEvent event = stream.Next(Clock::now() + kForever);
    if (event.kind == AgentEvent::Kind::kEnd) return JsonResponse(200, ExitToJson(event.end));
    const char* name = event.kind == AgentEvent::Kind::kStdout ? "stdout" : "stderr";
    if (!call.sink->Send(kNdjson, Line({{name, Base64Encode(event.data)}}))) {
      // The caller went away: so does its process (and its group).
      spdlog::info("sandbox {}: exec {} lost its caller; killing it", id.str(), exec->id);
      stream.Signal(SIGKILL);
      return JsonResponse(200, json::object());
    }
  }
}

HttpResponse WriteExecStdin(const Call& call) {
  auto query = ParseQuery(
      std::string_view(call.request.target().data(), call.request.target().size()), {"eof"});
  std::shared_ptr<GuestExec> holder;
  GuestExec& exec = ExecOf(call, holder, "writing to a program");
  std::uint64_t written = 0;
  if (HttpBodySource* body = call.sink ? call.sink->body() : nullptr) {
    std::string buffer(kBodyPiece, '\0');
    while (std::size_t n = body->Read(buffer.data(), buffer.size())) {
      exec.stream->Write({buffer.data(), n}, Clock::now() + kInputTimeout);
      written += n;
    }
  } else {
    exec.stream->Write(call.request.body(), Clock::now() + kInputTimeout);
    written = call.request.body().size();
  }
  const bool eof = query.count("eof") != 0 && query["eof"] != "0" && query["eof"] != "false";
  if (eof) exec.stream->CloseInput();
  return JsonResponse(200, {{"written", written}, {"eof", eof}});
}

HttpResponse ResizeExecTerminal(const Call& call) {
  auto [rows, cols] = ParseTerminalSize(call.request.body());
  std::shared_ptr<GuestExec> holder;
  GuestExec& exec = ExecOf(call, holder, "resizing a terminal");
  if (!exec.tty) Fail(ErrorCode::kFailedPrecondition, "exec {} has no terminal", exec.id);
  exec.stream->Resize(rows, cols, Clock::now() + std::chrono::seconds(10));
  return JsonResponse(200, {{"rows", rows}, {"cols", cols}});
}

HttpResponse SignalExec(const Call& call) {
  const int signal = ParseSignal(call.request.body());
  std::shared_ptr<GuestExec> holder;
  GuestExec& exec = ExecOf(call, holder, "signalling a program");
  exec.stream->Signal(signal);
  return JsonResponse(200, {{"signal", signal}});
}

HttpResponse DownloadFile(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  auto query = ParseQuery(
      std::string_view(call.request.target().data(), call.request.target().size()), {"path"});
  if (query.count("path") == 0) Fail(ErrorCode::kInvalidArgument, "'path' is required");
  std::optional<std::string> token = ActingToken(call, id, "reading files");
  GuestDownload download = call.c.engine->Download(id, query["path"], token);
  const char* type = download.tar ? "application/x-tar" : "application/octet-stream";
  std::uint64_t sent = 0;
  for (;;) {
    AgentEvent event = download.stream->Next(Clock::now() + kForever);
    if (event.kind == AgentEvent::Kind::kEnd) {
      if (event.end.contains("error") || event.end.value("exit", 0) != 0) {
        // Too late for a status: the body stops short (a file's size was
        // in X-Ephemera-Size... no: the caller checks what it got).
        spdlog::warn("sandbox {}: download of {} failed after {} bytes: {}", id.str(),
                     EscapeForLog(query["path"], 200), sent, event.end.dump());
        if (call.sink != nullptr && call.sink->Send(type, "")) {
          Fail(ErrorCode::kUnavailable, "the download failed after {} bytes", sent);
        }
      }
      break;
    }
    if (event.kind == AgentEvent::Kind::kStderr) continue;  // tar's warnings
    if (call.sink == nullptr) Fail(ErrorCode::kInvalidArgument, "this door cannot stream");
    if (!call.sink->Send(type, event.data)) return JsonResponse(200, json::object());
    sent += event.data.size();
  }
  HttpResponse response{http::status::ok, 11};
  response.set(http::field::content_type, type);
  return response;
}

HttpResponse UploadFile(const Call& call) {
  SandboxId id = SandboxId::Parse(call.param);
  auto query =
      ParseQuery(std::string_view(call.request.target().data(), call.request.target().size()),
                 {"path", "mode", "owner"});
  if (query.count("path") == 0) Fail(ErrorCode::kInvalidArgument, "'path' is required");
  GuestUpload upload;
  upload.path = query["path"];
  if (query.count("mode")) upload.mode = ParseFileMode(query["mode"]);
  upload.owner = query.count("owner") ? query["owner"] : "";
  const auto type = call.request[http::field::content_type];
  upload.tar = type.starts_with("application/x-tar");
  if (upload.tar && upload.mode) {
    Fail(ErrorCode::kInvalidArgument, "'mode' is for a file: a tar carries its own");
  }
  std::optional<std::string> token = ActingToken(call, id, "writing files");
  HttpBodySource* body = call.sink ? call.sink->body() : nullptr;
  std::shared_ptr<AgentStream> stream = call.c.engine->Upload(id, upload, token);
  std::uint64_t received = 0;
  try {
    if (body != nullptr) {
      std::string buffer(kBodyPiece, '\0');
      while (std::size_t n = body->Read(buffer.data(), buffer.size())) {
        stream->Write({buffer.data(), n}, Clock::now() + kInputTimeout);
        received += n;
      }
    } else {
      stream->Write(call.request.body(), Clock::now() + kInputTimeout);
      received = call.request.body().size();
    }
    stream->CloseInput();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kFailedPrecondition) throw;  // the body or the guest stopped
    // The guest ended the stream early: its end says why.
  }
  std::string errors;  // a tar's stderr
  for (;;) {
    AgentEvent event = stream->Next(Clock::now() + kForever);
    if (event.kind == AgentEvent::Kind::kStderr && errors.size() < 4096) errors += event.data;
    if (event.kind != AgentEvent::Kind::kEnd) continue;
    if (event.end.contains("error")) {
      Fail(ErrorCode::kFailedPrecondition, "the guest could not write {}: {}",
           EscapeForLog(upload.path, 200), event.end["error"].get<std::string>());
    }
    if (upload.tar && event.end.value("exit", -1) != 0) {
      Fail(ErrorCode::kInvalidArgument, "the guest's tar refused the archive: {}",
           EscapeForLog(errors, 1000));
    }
    break;
  }
  return JsonResponse(200, {{"path", upload.path}, {"size", received}, {"tar", upload.tar}});
}

}  // namespace ephemera::routes

// Programs and files in a sandbox's guest (docs/api.md, "Exec and files").
// Output streams as the guest produces it: an exec answers NDJSON lines, a
// download the bytes; input streams in the same way (an upload's body, a
// process's stdin), through the agent's flow control, so that neither
// direction holds more than a window in the daemon's memory.
#include <signal.h>

#include <spdlog/spdlog.h>

#include <thread>

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

// How often a silent exec checks that its caller is still there.
constexpr auto kCallerCheck = std::chrono::seconds(2);

std::string Line(const json& value) { return value.dump() + "\n"; }

// A stream's end as the guest's agent said it (untrusted: any type).
std::string EndError(const json& end) {
  auto error = end.find("error");
  if (error == end.end()) return "";
  return error->is_string() ? error->get<std::string>() : error->dump();
}
int EndExit(const json& end) {
  auto exit = end.find("exit");
  return exit != end.end() && exit->is_number_integer() ? exit->get<int>() : -1;
}

// The end of a process as the last NDJSON line.
json ExitToJson(const json& end) {
  if (end.contains("error")) {
    return {{"error", {{"code", "unavailable"}, {"message", EndError(end)}}}};
  }
  json exit = json::object();
  if (auto code = end.find("exit"); code != end.end() && code->is_number_integer()) {
    exit["code"] = *code;
  }
  if (auto signal = end.find("signal"); signal != end.end() && signal->is_number_integer()) {
    exit["signal"] = *signal;
  }
  auto timed_out = end.find("timed_out");
  exit["timed_out"] = timed_out != end.end() && timed_out->is_boolean() && timed_out->get<bool>();
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
  GuestStream& stream = *exec->stream;
  if (parsed.stdin_data) {
    stream.Write(*parsed.stdin_data, Clock::now() + kInputTimeout);
    stream.CloseInput();
  }
  if (!call.sink->Send(kNdjson, Line({{"exec", {{"id", exec->id}, {"pid", exec->pid}}}}))) {
    stream.Signal(SIGKILL);
    return JsonResponse(200, json::object());
  }
  for (;;) {
    GuestEvent event;
    try {
      event = stream.Next(Clock::now() + kCallerCheck);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kTimeout) throw;
      // Silent for a while: is anyone still waiting for it?
      if (call.sink->ClientConnected()) continue;
      spdlog::info("sandbox {}: exec {} lost its caller; killing it", id.str(), exec->id);
      stream.Signal(SIGKILL);
      return JsonResponse(200, json::object());
    }
    if (event.kind == GuestEvent::Kind::kEnd) return JsonResponse(200, ExitToJson(event.end));
    const char* name = event.kind == GuestEvent::Kind::kStdout ? "stdout" : "stderr";
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
  if (!exec.stdin_open) {
    Fail(ErrorCode::kFailedPrecondition,
         "exec {} reads no stdin: start it with \"stdin\": true to feed it", exec.id);
  }
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
    GuestEvent event = download.stream->Next(Clock::now() + kForever);
    if (event.kind == GuestEvent::Kind::kEnd) {
      const bool failed = !EndError(event.end).empty() || (download.tar && EndExit(event.end) != 0);
      if (!failed) break;
      spdlog::warn("sandbox {}: download of {} failed after {} bytes: {}", id.str(),
                   EscapeForLog(query["path"], 200), sent, EscapeForLog(event.end.dump(), 300));
      if (sent == 0) {
        Fail(ErrorCode::kFailedPrecondition, "the guest could not read {}: {}",
             EscapeForLog(query["path"], 200), EscapeForLog(EndError(event.end), 300));
      }
      // Too late for a status: the answer is cut short instead of ended,
      // so that no client takes it for the whole file.
      call.sink->Abort();
      return JsonResponse(200, json::object());
    }
    if (event.kind == GuestEvent::Kind::kStderr) continue;  // tar's warnings
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
  std::shared_ptr<GuestStream> stream = call.c.engine->Upload(id, upload, token);
  // The stream's events are taken while the body goes in: a tar that
  // writes warnings would otherwise fill its output window and stop
  // reading its input.
  std::string errors;  // a tar's stderr
  GuestEvent end;
  std::thread drain([&] {
    try {
      for (;;) {
        GuestEvent event = stream->Next(Clock::now() + kForever);
        if (event.kind == GuestEvent::Kind::kStderr && errors.size() < 4096) errors += event.data;
        if (event.kind == GuestEvent::Kind::kEnd) {
          end = std::move(event);
          return;
        }
      }
    } catch (const std::exception& e) {
      end.end = {{"error", e.what()}};
    }
  });
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
    if (e.code() != ErrorCode::kFailedPrecondition) {
      // The body or the guest stopped: abandon the stream (its end comes).
      stream->Signal(SIGKILL);
      drain.join();
      throw;
    }
    // The guest ended the stream early: its end says why.
  }
  drain.join();
  if (!EndError(end.end).empty()) {
    Fail(ErrorCode::kFailedPrecondition, "the guest could not write {}: {}",
         EscapeForLog(upload.path, 200), EscapeForLog(EndError(end.end), 300));
  }
  if (upload.tar && EndExit(end.end) != 0) {
    Fail(ErrorCode::kInvalidArgument, "the guest's tar refused the archive: {}",
         EscapeForLog(errors, 1000));
  }
  return JsonResponse(200, {{"path", upload.path}, {"size", received}, {"tar", upload.tar}});
}

}  // namespace ephemera::routes

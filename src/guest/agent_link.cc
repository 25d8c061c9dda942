#include "guest/agent_link.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <cerrno>

#include "core/base64.h"
#include "core/error.h"
#include "core/text.h"
#include "guest/agent_client.h"

namespace ephemera {

using nlohmann::json;

namespace {

constexpr unsigned kStreamsProtocol = 3;

// The agent's refusal as an error of ours: its "code" says whose fault.
[[noreturn]] void FailRefused(const std::string& op, const json& answer) {
  const json& error = answer.contains("error") ? answer["error"] : json();
  const std::string text =
      EscapeForLog(error.is_string() ? error.get<std::string>() : error.dump(), 500);
  const json* code_field = answer.contains("code") ? &answer["code"] : nullptr;
  const std::string code =
      code_field && code_field->is_string() ? code_field->get<std::string>() : "";
  Fail(code == "invalid"     ? ErrorCode::kInvalidArgument
       : code == "not_found" ? ErrorCode::kNotFound
                             : ErrorCode::kFailedPrecondition,
       "the guest refused '{}': {}", op, text);
}

}  // namespace

std::shared_ptr<AgentLink> AgentLink::Open(const std::filesystem::path& socket,
                                           const std::string& token, Clock::time_point deadline) {
  AgentClient client = AgentClient::Connect(socket, deadline);
  const unsigned protocol = client.Hello(token, deadline);
  if (protocol < kStreamsProtocol) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest agent speaks protocol {}, without exec and files (3): rebuild the image",
         protocol);
  }
  std::string pending;
  UniqueFd fd = std::move(client).Release(pending);
  // Blocking from here on: the reader thread waits in recv, Close wakes it.
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  timeval send_timeout{30, 0};  // an agent that takes nothing for this long is stuck
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  std::shared_ptr<AgentLink> link(new AgentLink(std::move(fd), socket.string()));
  for (size_t nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
    link->Dispatch(pending.substr(0, nl));
    pending.erase(0, nl + 1);
  }
  link->reader_ = std::thread([raw = link.get()] { raw->ReadLoop(); });
  return link;
}

AgentLink::AgentLink(UniqueFd fd, std::string where)
    : fd_(std::move(fd)), where_(std::move(where)) {}

AgentLink::~AgentLink() {
  Close();
  if (reader_.joinable()) reader_.join();
}

void AgentLink::Close() {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
  }
  ::shutdown(fd_.get(), SHUT_RDWR);  // wakes the reader
  changed_.notify_all();
}

std::size_t AgentLink::OpenStreams() {
  std::lock_guard lock(mutex_);
  std::size_t open = 0;
  for (const auto& [id, stream] : streams_) open += stream->end_ ? 0 : 1;
  return open;
}

bool AgentLink::closed() {
  std::lock_guard lock(mutex_);
  return closed_;
}

void AgentLink::ReadLoop() {
  std::string buffer;
  char chunk[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t start = 0;
    bool broken = false;
    for (size_t nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n', start)) {
      try {
        Dispatch(buffer.substr(start, nl - start));
      } catch (const std::exception& e) {
        // The guest is not to be trusted: what it sends may be anything.
        spdlog::warn("guest agent {}: {}; closing its channel", where_, e.what());
        broken = true;
        break;
      }
      start = nl + 1;
    }
    if (broken) break;
    buffer.erase(0, start);
    if (buffer.size() > AgentClient::kMaxLine) {
      spdlog::warn("guest agent {}: a line over {} bytes; closing", where_, AgentClient::kMaxLine);
      break;
    }
  }
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (auto& [id, stream] : streams_) {
    if (!stream->end_) {
      stream->end_ = GuestEvent{GuestEvent::Kind::kEnd, "",
                                json{{"error", "the guest agent's channel closed"}}};
    }
  }
  changed_.notify_all();
}

void AgentLink::Dispatch(const std::string& line) {
  json message = json::parse(line, nullptr, false);
  if (message.is_discarded() || !message.is_object()) {
    spdlog::warn("guest agent {}: not JSON: {}", where_, EscapeForLog(line, 200));
    return;
  }
  std::lock_guard lock(mutex_);
  if (auto id = message.find("id"); id != message.end()) {
    const std::uint64_t key = id->is_number_unsigned() ? id->get<std::uint64_t>() : 0;
    if (key != 0 && awaited_.count(key) != 0) {
      answers_[key] = std::move(message);  // (the key first: the move empties `id`)
      changed_.notify_all();
    }
    return;  // answers nobody waits for: acks, input
  }
  auto stream_id = message.find("stream");
  if (stream_id == message.end() || !stream_id->is_number_unsigned()) return;
  auto it = streams_.find(stream_id->get<std::uint64_t>());
  if (it == streams_.end()) return;  // a stream given up on
  AgentStream& stream = *it->second;
  if (stream.end_) return;
  for (const char* name : {"stdout", "stderr"}) {
    if (auto data = message.find(name); data != message.end() && data->is_string()) {
      std::optional<std::string> bytes = Base64Decode(data->get<std::string>());
      if (!bytes) throw std::runtime_error("stream " + std::to_string(stream.id_) + ": bad base64");
      stream.queued_ += bytes->size();
      // The agent sends no more than its window before acks: more is a
      // guest that would have the daemon hold its output without end.
      if (stream.queued_ + stream.to_ack_ > AgentStream::kOutputLimit) {
        throw std::runtime_error("stream " + std::to_string(stream.id_) +
                                 ": output past the window (flow control ignored)");
      }
      stream.events_.push_back(
          {name[3] == 'o' ? GuestEvent::Kind::kStdout : GuestEvent::Kind::kStderr,
           std::move(*bytes),
           {}});
    }
  }
  if (auto written = message.find("written");
      written != message.end() && written->is_number_unsigned()) {
    // Never past what was sent: a guest that says more cannot unblock the window.
    stream.written_ = std::min(stream.sent_, stream.written_ + written->get<std::uint64_t>());
  }
  if (auto end = message.find("end");
      end != message.end() && end->is_boolean() && end->get<bool>()) {
    message.erase("stream");
    message.erase("end");
    stream.end_ = GuestEvent{GuestEvent::Kind::kEnd, "", std::move(message)};
  }
  changed_.notify_all();
}

std::uint64_t AgentLink::Reserve(bool awaited) {
  std::lock_guard lock(mutex_);
  if (closed_) Fail(ErrorCode::kUnavailable, "the guest agent's channel closed ({})", where_);
  const std::uint64_t id = next_id_++;
  // Awaited before it is sent: the answer may come before Await runs.
  if (awaited) awaited_.insert(id);
  return id;
}

void AgentLink::SendWithId(std::uint64_t id, json request) {
  request["id"] = id;
  const std::string line = request.dump() + "\n";
  std::lock_guard send(send_mutex_);
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int err = n < 0 ? errno : EPIPE;
    Close();  // half a line went out: the channel is unusable
    FailErrno(fmt::format("sending to the guest agent ({})", where_), err,
              err == EAGAIN ? ErrorCode::kTimeout : ErrorCode::kUnavailable);
  }
}

void AgentLink::Send(json request) { SendWithId(Reserve(false), std::move(request)); }

json AgentLink::Await(std::uint64_t id, const std::string& op, Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  const bool answered =
      changed_.wait_until(lock, deadline, [&] { return answers_.count(id) != 0 || closed_; });
  awaited_.erase(id);
  auto it = answers_.find(id);
  if (it == answers_.end()) {
    if (!answered) Fail(ErrorCode::kTimeout, "the guest agent did not answer '{}' in time", op);
    Fail(ErrorCode::kUnavailable, "the guest agent's channel closed ({})", where_);
  }
  json answer = std::move(it->second);
  answers_.erase(it);
  lock.unlock();
  auto ok = answer.find("ok");
  if (ok == answer.end() || !ok->is_boolean() || !ok->get<bool>()) FailRefused(op, answer);
  return answer;
}

json AgentLink::Call(json request, Clock::time_point deadline) {
  const std::string op = request.value("op", std::string("?"));
  const std::uint64_t id = Reserve(true);
  try {
    SendWithId(id, std::move(request));
  } catch (...) {
    std::lock_guard lock(mutex_);
    awaited_.erase(id);
    throw;
  }
  return Await(id, op, deadline);
}

std::shared_ptr<AgentStream> AgentLink::Start(json request, Clock::time_point deadline) {
  const std::string op = request.value("op", std::string("?"));
  const std::uint64_t id = Reserve(true);
  std::shared_ptr<AgentStream> stream(new AgentStream(shared_from_this(), id));
  {
    // Registered before the agent can speak of it.
    std::lock_guard lock(mutex_);
    streams_[id] = stream.get();
  }
  try {
    SendWithId(id, std::move(request));
    stream->started_ = Await(id, op, deadline);
  } catch (const Error& e) {
    std::lock_guard lock(mutex_);
    awaited_.erase(id);
    // Refused: nothing runs. Timed out: it may run yet, and the kill its
    // destructor sends must reach it.
    if (e.code() != ErrorCode::kTimeout) {
      stream->end_ = GuestEvent{GuestEvent::Kind::kEnd, "", json{{"error", "not started"}}};
    }
    throw;
  }
  return stream;
}

AgentStream::~AgentStream() {
  bool ended;
  {
    std::lock_guard lock(link_->mutex_);
    ended = end_.has_value();
    link_->streams_.erase(id_);
  }
  // Given up on: a process is killed, a file left half written removed.
  if (!ended) Signal(SIGKILL);
}

bool AgentStream::ended() {
  std::lock_guard lock(link_->mutex_);
  return end_.has_value() && events_.empty();
}

GuestEvent AgentStream::Next(Clock::time_point deadline) {
  std::uint64_t ack;
  {
    std::lock_guard lock(link_->mutex_);
    ack = std::exchange(to_ack_, 0);
  }
  if (ack > 0) {
    try {
      link_->Send({{"op", "ack"}, {"stream", id_}, {"bytes", ack}});
    } catch (const Error&) {
      // The channel closed: the end says so below.
    }
  }
  std::unique_lock lock(link_->mutex_);
  if (!link_->changed_.wait_until(lock, deadline, [&] { return !events_.empty() || end_; })) {
    Fail(ErrorCode::kTimeout, "the guest sent nothing in time on stream {}", id_);
  }
  if (events_.empty()) return *end_;
  GuestEvent event = std::move(events_.front());
  events_.pop_front();
  queued_ -= event.data.size();
  to_ack_ = event.data.size();
  return event;
}

void AgentStream::Write(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const std::string_view piece = data.substr(0, kInputPiece);
    {
      std::unique_lock lock(link_->mutex_);
      if (!link_->changed_.wait_until(lock, deadline, [&] {
            return end_ || sent_ - written_ + piece.size() <= kInputWindow;
          })) {
        Fail(ErrorCode::kTimeout, "the guest took no input in time on stream {}", id_);
      }
      if (end_) Fail(ErrorCode::kFailedPrecondition, "stream {} ended: it takes no input", id_);
      sent_ += piece.size();
    }
    link_->Send({{"op", "input"}, {"stream", id_}, {"data", Base64Encode(piece)}});
    data.remove_prefix(piece.size());
  }
}

void AgentStream::CloseInput() { link_->Send({{"op", "input"}, {"stream", id_}, {"eof", true}}); }

void AgentStream::Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point deadline) {
  link_->Call({{"op", "resize"}, {"stream", id_}, {"rows", rows}, {"cols", cols}}, deadline);
}

void AgentStream::Signal(int signal) {
  try {
    link_->Send({{"op", "signal"}, {"stream", id_}, {"signal", signal}});
  } catch (const Error& e) {
    spdlog::debug("guest agent: cannot signal stream {}: {}", id_, e.what());
  }
}

}  // namespace ephemera

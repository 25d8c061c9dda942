#include "guest/agent_client.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <thread>

#include "core/error.h"
#include "core/text.h"
#include "core/unix_socket.h"

namespace ephemera {

using nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

// Waits for `events` on `fd` until `deadline`; false when it passed.
bool WaitFor(int fd, short events, AgentClient::Clock::time_point deadline) {
  for (;;) {
    auto left = duration_cast<milliseconds>(deadline - AgentClient::Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) FailErrno("poll on the agent channel", errno);
  }
}

}  // namespace

AgentClient AgentClient::Connect(const std::filesystem::path& socket, Clock::time_point deadline) {
  for (;;) {
    UniqueFd fd = TryConnectUnix(socket, true);
    if (fd) return AgentClient(std::move(fd), socket.string());
    if (Clock::now() >= deadline) {
      FailErrno(fmt::format("the guest agent's channel {} does not answer", socket.string()), errno,
                ErrorCode::kUnavailable);
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
}

unsigned AgentClient::Hello(const std::string& token, Clock::time_point deadline) {
  json answer = Call({{"op", "hello"}, {"token", token}}, deadline);
  auto protocol = answer.find("protocol");
  if (protocol == answer.end() || !protocol->is_number_unsigned() || *protocol < 1 ||
      *protocol > kAgentProtocol) {
    Fail(ErrorCode::kFailedPrecondition, "the guest agent speaks another protocol ({})",
         EscapeForLog(answer.dump(), 100));
  }
  return protocol->get<unsigned>();
}

json AgentClient::Call(json request, Clock::time_point deadline) {
  const std::uint64_t id = next_id_++;
  const std::string op = request.value("op", std::string("?"));
  request["id"] = id;
  Send(request.dump() + "\n", deadline);
  // Answers to requests given up on earlier (a timeout) come first: skip them.
  for (;;) {
    std::string line = ReadLine(deadline);
    json answer = json::parse(line, nullptr, false);
    if (answer.is_discarded() || !answer.is_object() || !answer.contains("ok") ||
        !answer["ok"].is_boolean()) {
      Fail(ErrorCode::kInternal, "the guest agent answered '{}' with something else than JSON: {}",
           op, EscapeForLog(line, 200));
    }
    // id null: the agent could not read a request at all (framing); that
    // one was ours, since requests go one at a time.
    const bool unreadable = answer.contains("id") && answer["id"].is_null();
    if (!unreadable && (!answer.contains("id") || answer["id"] != id)) continue;
    if (!answer["ok"].get<bool>()) {
      const json& error = answer.contains("error") ? answer["error"] : json();
      Fail(ErrorCode::kFailedPrecondition, "the guest agent refused '{}': {}", op,
           EscapeForLog(error.is_string() ? error.get<std::string>() : error.dump(), 500));
    }
    return answer;
  }
}

void AgentClient::Send(const std::string& line, Clock::time_point deadline) {
  std::size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) FailErrno("sending to the guest agent", errno, ErrorCode::kUnavailable);
    if (!WaitFor(fd_.get(), POLLOUT, deadline)) {
      Fail(ErrorCode::kTimeout, "the guest agent took no request in time ({})", where_);
    }
  }
}

std::string AgentClient::ReadLine(Clock::time_point deadline) {
  for (;;) {
    if (auto newline = buffer_.find('\n'); newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (buffer_.size() > kMaxLine) {
      Fail(ErrorCode::kInternal, "the guest agent sent a line over {} bytes", kMaxLine);
    }
    char chunk[16384];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) Fail(ErrorCode::kUnavailable, "the guest agent's channel closed ({})", where_);
    if (errno == EINTR) continue;
    if (errno != EAGAIN) FailErrno("reading from the guest agent", errno, ErrorCode::kUnavailable);
    if (!WaitFor(fd_.get(), POLLIN, deadline)) {
      Fail(ErrorCode::kTimeout, "the guest agent did not answer in time ({})", where_);
    }
  }
}

}  // namespace ephemera

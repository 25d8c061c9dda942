#include "vm/qemu/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/unix_socket.h"

namespace ephemera {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxMessage = 1 << 20;

}  // namespace

QmpClient QmpClient::Connect(const std::filesystem::path& socket, std::chrono::milliseconds timeout,
                             int abort_fd) {
  auto deadline = Clock::now() + timeout;
  UniqueFd fd;
  for (;;) {
    fd = TryConnectUnix(socket);
    if (fd) break;
    if (Clock::now() >= deadline) {
      Fail(ErrorCode::kUnavailable, "QMP socket {} does not answer: {}", socket.string(),
           std::strerror(errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  QmpClient client(std::move(fd));
  client.abort_fd_ = abort_fd;
  json greeting = client.ReadMessage(deadline);
  if (!greeting.contains("QMP")) {
    Fail(ErrorCode::kInternal, "QMP socket {} sent no greeting", socket.string());
  }
  client.Execute("qmp_capabilities", nullptr,
                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  client.abort_fd_ = -1;
  return client;
}

void QmpClient::PassFd(const std::string& name, int fd) {
  const std::string line =
      json{{"execute", "getfd"}, {"arguments", {{"fdname", name}}}}.dump() + "\n";
  iovec data{const_cast<char*>(line.data()), line.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(fd_.get(), &message, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) FailErrno("QMP getfd", errno, ErrorCode::kUnavailable);
  // The rest of a short write goes without the descriptor, which went first.
  if (static_cast<std::size_t>(n) < line.size()) Send(line.substr(static_cast<std::size_t>(n)));
  AwaitReturn("getfd", Clock::now() + std::chrono::seconds(5));
}

void QmpClient::Migrate(const std::string& command, const json& arguments,
                        std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Execute(command, arguments);
  for (auto pause = std::chrono::milliseconds(2);;
       pause = std::min(pause * 2, std::chrono::milliseconds(50))) {
    json status = Execute("query-migrate");
    const std::string state = status.value("status", std::string());
    if (state == "completed") return;
    if (state == "failed" || state == "cancelled") {
      Fail(ErrorCode::kFailedPrecondition, "{} {}: {}", command, state,
           status.value("error-desc", std::string("QEMU gave no reason")));
    }
    if (Clock::now() >= deadline) {
      Fail(ErrorCode::kTimeout, "{} did not complete in {} s (status '{}')", command,
           std::chrono::duration_cast<std::chrono::seconds>(timeout).count(), state);
    }
    std::this_thread::sleep_for(pause);
  }
}

void QmpClient::CancelMigration(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Execute("migrate_cancel");
  for (;;) {
    const std::string state = Execute("query-migrate").value("status", std::string());
    if (state != "active" && state != "setup" && state != "device" && state != "cancelling" &&
        state != "pre-switchover") {
      return;
    }
    if (Clock::now() >= deadline) {
      Fail(ErrorCode::kTimeout, "the migration did not stop (status '{}')", state);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void QmpClient::Send(const std::string& line) {
  std::size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno("QMP send", errno, ErrorCode::kUnavailable);
    }
    done += static_cast<std::size_t>(n);
  }
}

json QmpClient::ReadMessage(Clock::time_point deadline) {
  for (;;) {
    auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      try {
        return json::parse(line);
      } catch (const json::exception& e) {
        Fail(ErrorCode::kInternal, "QMP sent malformed JSON: {}", e.what());
      }
    }
    if (buffer_.size() > kMaxMessage)
      Fail(ErrorCode::kInternal, "QMP message exceeds {} bytes", kMaxMessage);
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) Fail(ErrorCode::kTimeout, "QMP did not answer in time");
    pollfd pfds[2] = {{fd_.get(), POLLIN, 0}, {abort_fd_, POLLIN, 0}};
    int ready = ::poll(pfds, abort_fd_ >= 0 ? 2 : 1, static_cast<int>(left));
    if (ready < 0 && errno != EINTR) FailErrno("QMP poll", errno);
    if (ready <= 0) continue;
    if (abort_fd_ >= 0 && (pfds[1].revents & POLLIN) && !(pfds[0].revents & POLLIN)) {
      Fail(ErrorCode::kUnavailable, "QEMU exited before QMP answered");
    }
    char chunk[4096];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n == 0) Fail(ErrorCode::kUnavailable, "QMP connection closed (QEMU exited?)");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      FailErrno("QMP recv", errno, ErrorCode::kUnavailable);
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

json QmpClient::Execute(const std::string& command, const json& arguments,
                        std::chrono::milliseconds timeout) {
  json request = {{"execute", command}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  Send(request.dump() + "\n");
  return AwaitReturn(command, Clock::now() + timeout);
}

json QmpClient::AwaitReturn(const std::string& command, Clock::time_point deadline) {
  for (;;) {
    json message = ReadMessage(deadline);
    if (message.contains("event")) {
      events_.push_back(std::move(message));
      continue;
    }
    if (message.contains("error")) {
      Fail(ErrorCode::kFailedPrecondition, "QMP {} failed: {}", command,
           message["error"].value("desc", std::string("unknown error")));
    }
    if (message.contains("return")) return message["return"];
  }
}

void QmpClient::SetMigrationCapability(const std::string& capability, bool on) {
  Execute("migrate-set-capabilities",
          {{"capabilities", nlohmann::json::array({{{"capability", capability}, {"state", on}}})}});
}

}  // namespace ephemera

#include "guest/agent_provision.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/base64.h"
#include "core/error.h"
#include "core/random.h"
#include "core/text.h"
#include "core/unique_fd.h"
#include "guest/agent_client.h"

namespace ephemera {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kEntropyBytes = 64;

// One attempt: "" when an SSH-2.0 banner came, else what went wrong.
std::string TryBanner(const std::string& host, std::uint16_t port, Clock::time_point deadline) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 address", host);
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) FailErrno("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    return std::strerror(errno);
  }
  std::string banner;
  short events = POLLOUT;
  for (;;) {
    auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return "no banner in time";
    pollfd p{fd.get(), events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 1000)));
    if (n < 0 && errno != EINTR) FailErrno("poll", errno);
    if (n <= 0) continue;
    if (events == POLLOUT) {
      int error = 0;
      socklen_t length = sizeof error;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) return std::strerror(error);
      events = POLLIN;
      continue;
    }
    char chunk[256];
    ssize_t got = ::recv(fd.get(), chunk, sizeof chunk, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) return "closed before its banner";
    banner.append(chunk, static_cast<std::size_t>(got));
    if (banner.find('\n') != std::string::npos || banner.size() >= 255) {
      if (banner.starts_with("SSH-2.0-")) return "";
      return "not an SSH server: " + EscapeForLog(banner.substr(0, 80));
    }
  }
}

}  // namespace

void WaitForSshBanner(const std::string& host, std::uint16_t port, Clock::time_point deadline) {
  std::string last = "no attempt made";
  milliseconds pause(2);
  while (Clock::now() < deadline) {
    last = TryBanner(host, port, deadline);
    if (last.empty()) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, milliseconds(100));
  }
  Fail(ErrorCode::kTimeout, "the guest's sshd at {}:{} did not answer in time (last: {})", host,
       port, last);
}

json BuildIdentity(const AgentProvisionRequest& request, const ClientCredentials& credentials) {
  if (!request.host_key) Fail(ErrorCode::kInternal, "an agent identity needs a host key");
  std::string entropy(kEntropyBytes, '\0');
  FillRandom(std::as_writable_bytes(std::span(entropy.data(), entropy.size())));
  json keys = json::array();
  std::size_t total = 0;
  for (const std::string& key : request.authorized_keys) {
    CheckAuthorizedKey(key);
    total += key.size() + 1;
    keys.push_back(key);
  }
  if (total > kMaxAuthorizedKeysBytes) {
    Fail(ErrorCode::kInvalidArgument, "the client's ssh keys take {} bytes (at most {})", total,
         kMaxAuthorizedKeysBytes);
  }
  json identity = {
      {"op", "identity"},
      {"hostname", request.hostname},
      {"time_ns",
       duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
           .count()},
      {"entropy", Base64Encode(entropy)},
      {"ssh_host_key", request.host_key->PrivateKeyOpenSsh()},
      {"ssh_host_key_public", request.host_key->PublicKeyLine()},
      {"user", credentials.username},
      {"password_hash", Sha512CryptHash(credentials.password)},
      {"authorized_keys", keys},
      {"ssh_port", request.ssh_port},
  };
  if (!request.new_token.empty()) identity["agent_token"] = request.new_token;
  if (request.network) {
    json dns = json::array();
    for (const Ipv4& server : request.network->dns) dns.push_back(server.str());
    identity["network"] = {{"mac", request.network->mac},
                           {"address", request.network->subnet.guest().str()},
                           {"prefix", 30},
                           {"gateway", request.network->subnet.gateway().str()},
                           {"dns", dns}};
  }
  return identity;
}

ProvisionResult ProvisionThroughAgent(const AgentProvisionRequest& request) {
  ProvisionResult result;
  auto t0 = Clock::now();
  AgentClient agent = AgentClient::Connect(request.socket, t0 + request.boot_timeout);
  if (agent.Hello(request.token, t0 + request.boot_timeout) < 2 && !request.new_token.empty()) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest agent speaks protocol 1, which cannot take a token of its own");
  }
  auto t1 = Clock::now();
  result.sshd_wait = duration_cast<milliseconds>(t1 - t0);

  result.credentials = GenerateClientCredentials();
  const auto deadline = t1 + request.setup_timeout;
  json answer = agent.Call(BuildIdentity(request, result.credentials), deadline);
  result.host_key = request.host_key->PublicKeyLine();
  result.host_key_fingerprint = request.host_key->Fingerprint();
  if (!answer.contains("host_key") || answer["host_key"] != result.host_key) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest agent installed another host key than the one it was given");
  }
  auto t2 = Clock::now();
  WaitForSshBanner(request.host, request.port, deadline);
  auto t3 = Clock::now();
  spdlog::debug(
      "provision {} through the agent: agent up {} ms, identity {} ms (guest: {}), "
      "sshd answering {} ms",
      request.host, result.sshd_wait.count(), duration_cast<milliseconds>(t2 - t1).count(),
      answer.contains("steps_ms") ? answer["steps_ms"].dump() : "-",
      duration_cast<milliseconds>(t3 - t2).count());
  result.setup = duration_cast<milliseconds>(t3 - t1);
  return result;
}

ProvisionResult GuestProvisioner::RunAgent(const AgentProvisionRequest& request) {
  return ProvisionThroughAgent(request);
}

void GuestProvisioner::SyncClock(const std::filesystem::path& agent_socket,
                                 const std::string& token) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  AgentClient agent = AgentClient::Connect(agent_socket, deadline);
  agent.Hello(token, deadline);
  agent.Call({{"op", "clock"},
              {"time_ns", duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count()}},
             deadline);
}

}  // namespace ephemera

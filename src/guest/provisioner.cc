#include "guest/provisioner.h"

#include <spdlog/spdlog.h>

#include <future>
#include <thread>

#include "core/error.h"
#include "core/text.h"
#include "guest/ssh_session.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

// Connects until sshd completes a handshake or the deadline passes: every
// 5 ms for the first second (a container's sshd is up in tens of ms, and a
// refused connection costs nothing), then backing off to 500 ms.
std::unique_ptr<SshSession> ConnectWithRetry(const std::string& host, std::uint16_t port,
                                             const std::string& user, Clock::time_point deadline) {
  milliseconds backoff(5);
  const auto fast_until = Clock::now() + milliseconds(1000);
  std::string last_error = "no attempt made";
  while (Clock::now() < deadline) {
    auto left = duration_cast<milliseconds>(deadline - Clock::now());
    try {
      return std::make_unique<SshSession>(host, port, user, std::min(left, milliseconds(3000)));
    } catch (const Error& e) {
      last_error = e.what();
    }
    std::this_thread::sleep_for(
        std::min(backoff, duration_cast<milliseconds>(deadline - Clock::now())));
    if (Clock::now() > fast_until) backoff = std::min(backoff * 2, milliseconds(500));
  }
  Fail(ErrorCode::kTimeout, "the guest's sshd at {}:{} did not answer in time (last: {})", host,
       port, last_error);
}

bool EndpointLogin(SshSession& session, const EndpointAuth& auth) {
  if (auth.key && session.AuthenticateWithKey(*auth.key)) return true;
  return auth.password && session.AuthenticateWithPassword(*auth.password);
}

// As the client itself, so the file and ~/.ssh are the client's. The keys
// were checked (CheckAuthorizedKey): no quote can end the quoting.
void AuthorizeKeys(SshSession& client, const ProvisionRequest& request) {
  std::string command = "umask 077 && mkdir -p ~/.ssh && printf '%s\\n'";
  std::size_t total = 0;
  for (const std::string& key : request.authorized_keys) total += key.size() + 1;
  if (total > kMaxAuthorizedKeysBytes) {
    Fail(ErrorCode::kInvalidArgument, "the client's ssh keys take {} bytes (at most {})", total,
         kMaxAuthorizedKeysBytes);
  }
  for (const std::string& key : request.authorized_keys) {
    CheckAuthorizedKey(key);
    command += " '" + key + "'";
  }
  command += " >> ~/.ssh/authorized_keys";
  CommandResult done = client.Execute(command, request.setup_timeout);
  if (done.exit_status != 0) {
    Fail(ErrorCode::kFailedPrecondition, "cannot authorize the client's ssh keys (exit {}): {}",
         done.exit_status, EscapeForLog(done.err.empty() ? done.out : done.err, 500));
  }
}

}  // namespace

ProvisionResult Provision(const ProvisionRequest& request) {
  ProvisionResult result;
  auto t0 = Clock::now();
  auto session = ConnectWithRetry(request.host, request.port, request.endpoint_user,
                                  t0 + request.sshd_timeout);
  result.sshd_wait = duration_cast<milliseconds>(Clock::now() - t0);
  result.host_key_fingerprint = session->HostKeyFingerprint();
  result.host_key = session->HostKeyLine();
  if (request.expected_host_key && result.host_key != *request.expected_host_key) {
    Fail(ErrorCode::kFailedPrecondition,
         "the guest's SSH host key ({}) is not the one handed to it before boot",
         result.host_key_fingerprint);
  }
  if (!EndpointLogin(*session, request.endpoint)) {
    Fail(ErrorCode::kFailedPrecondition, "the guest refused the endpoint user's credentials");
  }

  auto t1 = Clock::now();
  auto step = [&, last = t1](const char* what) mutable {
    auto now = Clock::now();
    spdlog::debug("provision {}: {} in {} ms", request.host, what,
                  duration_cast<milliseconds>(now - last).count());
    last = now;
  };
  step("endpoint logged in");
  result.credentials = GenerateClientCredentials();
  CommandResult setup = session->Execute(
      fmt::format("sudo /bin/anweddol_container_setup.sh {} {} {}", result.credentials.username,
                  result.credentials.password, request.client_port),
      request.setup_timeout);
  session.reset();
  step("setup script ran");
  if (setup.exit_status != 0) {
    std::string detail = setup.err.empty() ? setup.out : setup.err;
    while (!detail.empty() && detail.back() == '\n') detail.pop_back();
    Fail(ErrorCode::kFailedPrecondition, "the guest's setup script failed (exit {}): {}",
         setup.exit_status, EscapeForLog(detail, 500));
  }

  // sshd re-executes to take the new configuration: retry while it restarts.
  auto deadline = Clock::now() + request.setup_timeout;
  // That the endpoint is refused now is checked at the same time as the
  // client's login (two connections: the second handshake and sshd's
  // delay after a failed login need not wait for the first).
  auto endpoint_refused = std::async(std::launch::async, [&request, deadline] {
    auto endpoint =
        ConnectWithRetry(request.host, request.client_port, request.endpoint_user, deadline);
    return !EndpointLogin(*endpoint, request.endpoint);
  });
  auto client =
      ConnectWithRetry(request.host, request.client_port, result.credentials.username, deadline);
  if (client->HostKeyFingerprint() != result.host_key_fingerprint) {
    Fail(ErrorCode::kFailedPrecondition, "the guest's host key changed during provisioning");
  }
  step("client connected");
  if (!client->AuthenticateWithPassword(result.credentials.password)) {
    Fail(ErrorCode::kFailedPrecondition, "the new user {} cannot log in after setup",
         result.credentials.username);
  }
  step("client logged in");
  if (!request.authorized_keys.empty()) AuthorizeKeys(*client, request);
  client.reset();
  if (!endpoint_refused.get()) {
    Fail(ErrorCode::kFailedPrecondition, "the endpoint user can still log in after setup");
  }
  step("endpoint refused");
  result.setup = duration_cast<milliseconds>(Clock::now() - t1);
  return result;
}

}  // namespace ephemera

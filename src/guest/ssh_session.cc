#include "guest/ssh_session.h"

#include <libssh/libssh.h>

#include "core/error.h"

namespace ephemera {

namespace {

constexpr std::size_t kMaxOutput = 1 << 20;

struct KeyDeleter {
  void operator()(ssh_key key) const { ssh_key_free(key); }
};
using Key = std::unique_ptr<std::remove_pointer_t<ssh_key>, KeyDeleter>;

struct ChannelDeleter {
  void operator()(ssh_channel channel) const {
    ssh_channel_close(channel);
    ssh_channel_free(channel);
  }
};
using Channel = std::unique_ptr<std::remove_pointer_t<ssh_channel>, ChannelDeleter>;

}  // namespace

struct SshSession::Impl {
  ssh_session session = nullptr;
  Key host_key;
  std::string where;
  ~Impl() {
    if (session) {
      ssh_disconnect(session);
      ssh_free(session);
    }
  }
};

SshSession::SshSession(const std::string& host, std::uint16_t port, const std::string& user,
                       std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->where = fmt::format("{}@{}:{}", user, host, port);
  impl_->session = ssh_new();
  if (!impl_->session) Fail(ErrorCode::kInternal, "cannot create an SSH session");
  ssh_session s = impl_->session;
  unsigned int port_option = port;
  long timeout_usec = static_cast<long>(timeout.count()) * 1000;
  int no = 0;
  ssh_options_set(s, SSH_OPTIONS_HOST, host.c_str());
  ssh_options_set(s, SSH_OPTIONS_PORT, &port_option);
  ssh_options_set(s, SSH_OPTIONS_USER, user.c_str());
  ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &timeout_usec);
  // No ~/.ssh/config, no agent, no known_hosts: the caller pins the key.
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);
  ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
  // Each step is a small request awaiting its answer: without TCP_NODELAY,
  // Nagle holds it back until the peer's delayed ACK (40 ms, every step).
  int nodelay = 1;
  ssh_options_set(s, SSH_OPTIONS_NODELAY, &nodelay);
  if (ssh_connect(s) != SSH_OK) {
    std::string message = ssh_get_error(s);
    ErrorCode code =
        message.find("imeout") != std::string::npos ? ErrorCode::kTimeout : ErrorCode::kUnavailable;
    Fail(code, "SSH to {} failed: {}", impl_->where, message);
  }
  ssh_key key = nullptr;
  if (ssh_get_server_publickey(s, &key) != SSH_OK) {
    Fail(ErrorCode::kInternal, "SSH to {}: no host key", impl_->where);
  }
  impl_->host_key.reset(key);
}

SshSession::~SshSession() = default;

ssh_session SshSession::raw() const { return impl_->session; }

std::string SshSession::HostKeyFingerprint() const {
  return KeyFingerprint(impl_->host_key.get(), impl_->where);
}

std::string SshSession::HostKeyLine() const {
  char* base64 = nullptr;
  if (ssh_pki_export_pubkey_base64(impl_->host_key.get(), &base64) != SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot export the host key of {}", impl_->where);
  }
  std::string line =
      std::string(ssh_key_type_to_char(ssh_key_type(impl_->host_key.get()))) + " " + base64;
  ssh_string_free_char(base64);
  return line;
}

bool SshSession::AuthenticateWithKey(const SshKeyPair& key) {
  return ssh_userauth_publickey(impl_->session, nullptr, static_cast<ssh_key>(key.handle())) ==
         SSH_AUTH_SUCCESS;
}

bool SshSession::AuthenticateWithPassword(const std::string& password) {
  return ssh_userauth_password(impl_->session, nullptr, password.c_str()) == SSH_AUTH_SUCCESS;
}

CommandResult SshSession::Execute(const std::string& command, std::chrono::milliseconds timeout) {
  Channel channel(ssh_channel_new(impl_->session));
  if (!channel || ssh_channel_open_session(channel.get()) != SSH_OK ||
      ssh_channel_request_exec(channel.get(), command.c_str()) != SSH_OK) {
    Fail(ErrorCode::kUnavailable, "SSH to {}: cannot run a command: {}", impl_->where,
         ssh_get_error(impl_->session));
  }
  CommandResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  while (!ssh_channel_is_eof(channel.get())) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      Fail(ErrorCode::kTimeout, "SSH to {}: '{}' did not finish within {} ms", impl_->where,
           command.substr(0, command.find(' ')), timeout.count());
    }
    int slice = static_cast<int>(std::min<long>(left.count(), 200));
    for (int is_stderr : {0, 1}) {
      int n = ssh_channel_read_timeout(channel.get(), buffer, sizeof buffer, is_stderr,
                                       is_stderr ? 0 : slice);
      if (n == SSH_ERROR) {
        Fail(ErrorCode::kUnavailable, "SSH to {}: read failed: {}", impl_->where,
             ssh_get_error(impl_->session));
      }
      std::string& sink = is_stderr ? result.err : result.out;
      if (n > 0 && sink.size() < kMaxOutput) sink.append(buffer, static_cast<std::size_t>(n));
    }
  }
  // Drain what arrived together with EOF.
  for (int is_stderr : {0, 1}) {
    int n;
    while ((n = ssh_channel_read_nonblocking(channel.get(), buffer, sizeof buffer, is_stderr)) >
           0) {
      std::string& sink = is_stderr ? result.err : result.out;
      if (sink.size() < kMaxOutput) sink.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ssh_channel_send_eof(channel.get());
  result.exit_status = ssh_channel_get_exit_status(channel.get());
  return result;
}

}  // namespace ephemera

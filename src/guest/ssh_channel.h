// GuestChannel over SSH, for VM images without the guest agent: the
// daemon logs in as the sandbox's client account with a key of its own,
// made at provisioning and held only in its memory (never the user's
// password), pinning the host key provisioning learnt. One SSH connection
// per exec or transfer. What the account cannot do, this cannot either:
// programs run as the client account alone, and files are the client's.
//
// A program runs through `sh -c` in the account's login folder; the shell
// first reports its pid, which sshd made the leader of a session of its
// own, so a timeout or a signal reaches the whole group (through a second
// connection's `kill`). A file is written to a fresh name beside its place
// and renamed over it by a second command, only once the daemon has sent
// all of it and the guest holds exactly that many bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "guest/credentials.h"
#include "guest/guest_stream.h"

namespace ephemera {

class SshStream;

struct SshTarget {
  std::string host;
  std::uint16_t port = 22;
  std::string user;                       // the client account
  std::shared_ptr<const SshKeyPair> key;  // the daemon's, in its authorized_keys
  std::string host_key;                   // "ssh-ed25519 AAAA...": any other is refused
  std::chrono::milliseconds connect_timeout{10000};
};

// `word` quoted for a POSIX shell.
std::string ShellQuote(const std::string& word);

// The shell text that runs `command` as ssh_channel.cc does: its pid
// reported first (on stderr), then its environment, its folder, the program.
std::string ShellCommandFor(const GuestCommand& command);

class SshChannel : public GuestChannel, public std::enable_shared_from_this<SshChannel> {
 public:
  explicit SshChannel(SshTarget target) : target_(std::move(target)) {}
  ~SshChannel() override { Close(); }

  // kInvalidArgument for a user other than the client account.
  std::shared_ptr<GuestStream> Exec(const GuestCommand& command,
                                    Clock::time_point deadline) override;
  GuestFileType Stat(const std::string& path, Clock::time_point deadline) override;
  std::shared_ptr<GuestStream> Read(const std::string& path, Clock::time_point deadline) override;
  // Written by the client account: `owner` must be empty or that account.
  std::shared_ptr<GuestStream> Write(const std::string& path, std::optional<mode_t> mode,
                                     const std::string& owner, Clock::time_point deadline) override;
  std::string PrivilegedUser() const override { return target_.user; }

  // Ends every stream still open (its connection cut: a destroyed VM never
  // answers) and refuses new ones. Idempotent.
  void Close();

 private:
  std::shared_ptr<GuestStream> Track(std::shared_ptr<SshStream> stream);

  SshTarget target_;
  std::mutex mutex_;
  bool closed_ = false;
  std::vector<std::weak_ptr<SshStream>> streams_;
};

}  // namespace ephemera

#include "agent/identity.h"

#include <fnmatch.h>
#include <time.h>

#include <utility>
#include <vector>

#include "agent/accounts.h"
#include "agent/error.h"

namespace ephemera::agent {

using nlohmann::ordered_json;

namespace {

constexpr int64_t kNsPerDay = int64_t{86400} * 1000 * 1000 * 1000;
constexpr Ownership kSystemFile{0644, 0, 0};

int64_t MonotonicUs() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000000 + now.tv_nsec / 1000;
}

// Runs one step: its failures are named after it, its time is added to
// steps_ms (kept in microseconds until the answer is made).
class Steps {
 public:
  template <typename F>
  void Run(const std::string& name, F&& step) {
    int64_t start = MonotonicUs();
    try {
      step();
    } catch (const std::exception& e) {
      throw AgentError(name, e.what());
    }
    int64_t took = MonotonicUs() - start;
    for (auto& [known, us] : times_us_) {
      if (known == name) return void(us += took);
    }
    times_us_.emplace_back(name, took);
  }

  ordered_json Milliseconds() const {
    ordered_json out = ordered_json::object();
    for (const auto& [name, us] : times_us_) out[name] = (us + 500) / 1000;
    return out;
  }

 private:
  std::vector<std::pair<std::string, int64_t>> times_us_;
};

std::string ResolvConf(const Network& network) {
  std::string out = "# written by ephemera-agent\n";
  for (const std::string& server : network.dns) out += "nameserver " + server + "\n";
  return out;
}

}  // namespace

std::string RewriteHosts(std::string_view hosts, const std::string& hostname) {
  std::string line = "127.0.1.1\t" + hostname + "\n";
  std::string out;
  bool replaced = false;
  for (std::string_view old : SplitLines(hosts)) {
    bool own = old.starts_with("127.0.1.1") && old.size() > 9 && (old[9] == ' ' || old[9] == '\t');
    if (own && !replaced) {
      out += line;
      replaced = true;
    } else if (!own) {
      out += old;
      out += '\n';
    }
  }
  if (!replaced) out += line;
  return out;
}

void GuestMachine::WriteHostKey(const std::string& private_key, const std::string& public_line) {
  std::string key = private_key;
  if (key.back() != '\n') key += '\n';
  std::string path = root_("/etc/ssh/ssh_host_ed25519_key");
  ReplaceFile(path + ".pub", public_line + "\n", kSystemFile, Keep::kNone);
  ReplaceFile(path, key, {0600, 0, 0}, Keep::kNone);
}

bool GuestMachine::PreparedFor(const Identity& identity) const {
  return prepared_ && prepared_->ssh_port == identity.ssh_port &&
         ::fnmatch(prepared_->allow_users.c_str(), identity.user.c_str(), 0) == 0;
}

ordered_json GuestMachine::Prepare(const Preparation& preparation) {
  Steps steps;
  steps.Run("host_key",
            [&] { WriteHostKey(preparation.ssh_host_key, preparation.ssh_host_key_public); });
  steps.Run("sshd", [&] {
    UpdateSshdConfig(root_, preparation.ssh_port, preparation.allow_users);
    system_.StartSshd(preparation.ssh_port);
  });
  prepared_ = preparation;
  return ordered_json{{"steps_ms", steps.Milliseconds()}};
}

void GuestMachine::SetClock(int64_t unix_ns) {
  try {
    system_.SetClock(unix_ns);
  } catch (const std::exception& e) {
    throw AgentError("clock", e.what());
  }
}

ordered_json GuestMachine::ApplyIdentity(const Identity& identity) {
  // The last check, before anything changes: is the user new?
  AccountFiles accounts = ReadAccountFiles(root_);
  CheckNewUser(accounts, identity.user);

  Steps steps;
  steps.Run("rng", [&] { system_.AddEntropy(identity.entropy); });
  steps.Run("clock", [&] { system_.SetClock(identity.time_ns); });
  steps.Run("hostname", [&] {
    system_.SetHostname(identity.hostname);
    ReplaceFile(root_("/etc/hostname"), identity.hostname + "\n", kSystemFile);
    if (std::optional<std::string> hosts = ReadFileIfExists(root_("/etc/hosts"))) {
      ReplaceFile(root_("/etc/hosts"), RewriteHosts(*hosts, identity.hostname), kSystemFile);
    }
  });
  steps.Run("host_key", [&] { WriteHostKey(identity.ssh_host_key, identity.ssh_host_key_public); });
  const bool sshd_prepared = PreparedFor(identity);
  steps.Run("accounts", [&] {
    AddAccount(root_, accounts,
               NewAccount{
                   .user = identity.user,
                   .password_hash = identity.password_hash,
                   .authorized_keys = identity.authorized_keys,
                   .days_since_epoch = identity.time_ns / kNsPerDay,
               });
    if (!sshd_prepared) UpdateSshdConfig(root_, identity.ssh_port, identity.user);
  });
  steps.Run("network", [&] {
    if (identity.network) {
      system_.ConfigureNetwork(*identity.network);
      ReplaceFile(root_("/etc/resolv.conf"), ResolvConf(*identity.network), kSystemFile);
    } else {
      system_.StartDhcp();
    }
  });
  steps.Run("sshd", [&] {
    // A prepared sshd reads the new host key at the next connection.
    if (!sshd_prepared || !system_.AwaitSshd(identity.ssh_port)) {
      system_.StartSshd(identity.ssh_port);
    }
  });
  if (!identity.network) steps.Run("network", [&] { system_.AwaitDhcp(); });

  return ordered_json{
      {"host_key", identity.ssh_host_key_public},
      {"ssh_port", identity.ssh_port},
      {"steps_ms", steps.Milliseconds()},
  };
}

}  // namespace ephemera::agent

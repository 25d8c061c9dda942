// Processes the host asks the agent to run (docs/guest-agent.md, "exec"):
// the request's checks, the account it runs as, and the spawn into a
// session of its own so that a signal or the timeout reaches its children.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/files.h"

namespace ephemera::agent {

struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  // supplementary, from /etc/group
};

// The account from the root's /etc/passwd and /etc/group (a static binary
// has no NSS). FieldError(field, "no such user") when there is none.
Account LookUpAccount(const Root& root, const std::string& user, const std::string& field);

struct ExecRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // NAME=value, on top of the account's defaults
  std::string cwd;               // empty: the account's home
  std::string user = "root";
  bool tty = false;
  uint16_t rows = 24;
  uint16_t cols = 80;
  int64_t timeout_ms = 0;   // 0: none
  bool stdin_open = false;  // false: stdin reads /dev/null
};

// Checks every field; FieldError naming the first that is wrong.
ExecRequest ParseExec(const nlohmann::json& request);

struct SpawnedProcess {
  pid_t pid = -1;
  int input = -1;   // -1 when stdin is /dev/null
  int output = -1;  // stdout, or the terminal's master side
  int errors = -1;  // -1 with a terminal (one stream)
};

// Starts the process (non-blocking ends for the caller). AgentError naming
// what failed ("exec: cannot execute ls: ..."): the program not found, the
// working directory missing, the account's ids refused.
SpawnedProcess Spawn(const ExecRequest& request, const Account& account);

// Sets the terminal's size (the kernel signals the process group).
void ResizeTerminal(int master, uint16_t rows, uint16_t cols);

}  // namespace ephemera::agent

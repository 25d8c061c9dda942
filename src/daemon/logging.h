// Process-wide logging setup for ephemerad (spdlog): lines on stderr, JSON
// lines, or the systemd journal with structured fields.
#pragma once

#include <spdlog/common.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/log_context.h"

namespace ephemera {

// level: trace|debug|info|warn|error. format: text (the journal instead
// when stderr is the journal's stream, as under systemd), json (one object
// a line on stderr), journal (always the journal).
void SetupLogging(const std::string& level, const std::string& format);

// One message's journal fields (NAME=value): MESSAGE, PRIORITY,
// SYSLOG_IDENTIFIER, and SANDBOX_ID, OWNER, PHASE from `scope` (SANDBOX_ID
// from a "sandbox <id>" the message names when no scope gives one).
std::vector<std::string> JournalFields(std::string_view message, spdlog::level::level_enum level,
                                       const LogFields& scope);

// The first sandbox id (a UUID) after "sandbox " in `message`; empty if none.
std::string SandboxNamedIn(std::string_view message);

}  // namespace ephemera

#include "core/log_context.h"

namespace ephemera {

namespace {

thread_local LogFields current;
thread_local int depth = 0;

}  // namespace

LogScope::LogScope(std::string sandbox, std::string owner, std::string phase)
    : previous_(current), had_previous_(depth > 0) {
  current = LogFields{std::move(sandbox), std::move(owner), std::move(phase)};
  ++depth;
}

LogScope::~LogScope() {
  --depth;
  current = had_previous_ ? previous_ : LogFields{};
}

void LogScope::SetPhase(std::string_view phase) {
  if (depth > 0) current.phase = std::string(phase);
}

const LogFields& LogScope::Current() { return current; }

}  // namespace ephemera

// What a thread is working on, for structured logs: the sandbox, its owner
// and the phase of the work (the journal's SANDBOX_ID, OWNER and PHASE
// fields; JSON logs' "sandbox", "owner" and "phase"). Set by the engine
// around a create or a destroy; read by the log sinks of the same thread.
#pragma once

#include <string>
#include <string_view>

namespace ephemera {

struct LogFields {
  std::string sandbox;
  std::string owner;
  std::string phase;
};

// Sets this thread's fields for its lifetime; the previous ones come back
// after it (scopes nest).
class LogScope {
 public:
  LogScope(std::string sandbox, std::string owner, std::string phase = "");
  ~LogScope();
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

  // The phase of this thread's innermost scope (no scope: ignored).
  static void SetPhase(std::string_view phase);
  static const LogFields& Current();

 private:
  LogFields previous_;
  bool had_previous_;
};

}  // namespace ephemera

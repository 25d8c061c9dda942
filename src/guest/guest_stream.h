// The daemon's way into a guest for programs and files, whatever carries
// it: the guest agent's channel (a VM's virtio port, agent_channel.h) or a
// container runtime (container/container_channel.h). The engine and the
// front doors see only these.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ephemera {

// What a stream says: output, or its end with its fields ("exit" |
// "signal" [+ "timed_out"] for a process, "size" for a file, "error" when
// it failed or the channel closed).
struct GuestEvent {
  enum class Kind { kStdout, kStderr, kEnd } kind = Kind::kEnd;
  std::string data;
  nlohmann::json end;
};

// A process running in the guest, or a file being read or written.
class GuestStream {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~GuestStream() = default;
  // What started it (a process's "pid", a file's "size", ...).
  virtual const nlohmann::json& started() const = 0;
  // The next event. After the end, the end again. kTimeout past `deadline`.
  // One caller at a time; the others below may come from other threads.
  virtual GuestEvent Next(Clock::time_point deadline) = 0;
  // Input for a process's stdin or a file being written. kTimeout when the
  // guest takes none of it before `deadline`; kFailedPrecondition once the
  // stream ended.
  virtual void Write(std::string_view data, Clock::time_point deadline) = 0;
  // No more input: a process reads end of file, a written file is kept.
  virtual void CloseInput() = 0;
  virtual void Resize(std::uint16_t rows, std::uint16_t cols, Clock::time_point deadline) = 0;
  // To a process's group (a written file not closed yet is dropped);
  // nothing once it ended.
  virtual void Signal(int signal) = 0;
  virtual bool ended() = 0;
};

// A program to run, every default already filled in by the engine.
struct GuestCommand {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;   // empty: the user's home
  std::string user;  // a name (or a uid)
  bool tty = false;
  std::uint16_t rows = 24, cols = 80;
  std::int64_t timeout_ms = 0;  // 0: none
  bool stdin_open = false;      // false: it reads /dev/null
};

struct GuestFileType {
  bool directory = false;
};

class GuestChannel {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~GuestChannel() = default;
  virtual std::shared_ptr<GuestStream> Exec(const GuestCommand& command,
                                            Clock::time_point deadline) = 0;
  // What `path` is, resolved by the guest's rules (its links and "..",
  // inside its root). kNotFound when nothing is there.
  virtual GuestFileType Stat(const std::string& path, Clock::time_point deadline) = 0;
  virtual std::shared_ptr<GuestStream> Read(const std::string& path,
                                            Clock::time_point deadline) = 0;
  // A file that replaces `path` whole once its input is closed, as
  // `owner` (a name) with `mode` (else 0644).
  virtual std::shared_ptr<GuestStream> Write(const std::string& path, std::optional<mode_t> mode,
                                             const std::string& owner,
                                             Clock::time_point deadline) = 0;
  // Who runs what needs to read anything (a folder packed as tar).
  virtual std::string PrivilegedUser() const { return "root"; }
};

}  // namespace ephemera

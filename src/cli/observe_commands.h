// `ephemera events` and `ephemera top`: the daemon's event log and a live
// view of what each sandbox uses.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cli/transport.h"

namespace ephemera::cli {

// Server-sent events as bytes come: each whole message (a blank line ends
// one) goes to the callback; comments and unknown fields are skipped.
struct SseMessage {
  std::string id;
  std::string event;
  std::string data;  // its data lines joined with '\n'
};
class SseParser {
 public:
  explicit SseParser(std::function<void(const SseMessage&)> on_message)
      : on_message_(std::move(on_message)) {}
  void Feed(std::string_view bytes);

 private:
  void Line(std::string_view line);
  std::function<void(const SseMessage&)> on_message_;
  std::string partial_;
  SseMessage message_;
  bool has_data_ = false;
};

struct EventsOptions {
  bool follow = false;
  bool json = false;
  std::optional<std::int64_t> since;  // none: the whole log, or only new ones with follow
};
// Prints events until the log's end (or, following, until the daemon stops).
int RunEvents(ApiClient& client, const EventsOptions& options);

// One event as `ephemera events` prints it: "SEQ TIME TYPE SANDBOX DETAIL [CAUSE]".
std::string FormatEvent(const nlohmann::json& event);

struct TopOptions {
  std::chrono::milliseconds interval{2000};
  bool once = false;  // one frame (two samples `interval` apart, for CPU %), then exit
};
int RunTop(ApiClient& client, const TopOptions& options);

// A frame of `ephemera top` from two /v1/usage answers (`before` may be
// null: no CPU % yet), `columns` wide.
std::string RenderTop(const nlohmann::json& before, const nlohmann::json& now, unsigned columns);

// 1536 -> "1.5K", 3 GiB -> "3.0G".
std::string HumanBytes(double bytes);
// 3725 -> "1h02m"; 42 -> "42s".
std::string HumanDuration(std::int64_t seconds);

}  // namespace ephemera::cli

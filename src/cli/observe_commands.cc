#include "cli/observe_commands.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <thread>

namespace ephemera::cli {

using nlohmann::json;

void SseParser::Feed(std::string_view bytes) {
  partial_.append(bytes);
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = partial_.find('\n', start);
    if (end == std::string::npos) break;
    std::string_view line(partial_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    Line(line);
    start = end + 1;
  }
  partial_.erase(0, start);
}

void SseParser::Line(std::string_view line) {
  if (line.empty()) {
    if (has_data_) on_message_(message_);
    message_ = {};
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // a comment (the daemon's keep-alive)
  const std::size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) message_.data += '\n';
    message_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    message_.event = std::string(value);
  } else if (field == "id") {
    message_.id = std::string(value);
  }
}

namespace {

std::string LocalTime(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

}  // namespace

std::string FormatEvent(const json& event) {
  std::string line =
      fmt::format("{:>6}  {}  {:<14} {:<36} {}", event.value("seq", 0),
                  LocalTime(event.value("at", std::int64_t{0})), event.value("type", "?"),
                  event.value("sandbox", "-"), event.value("detail", ""));
  if (event.contains("cause")) line += fmt::format(" [{}]", event.value("cause", ""));
  return line;
}

int RunEvents(ApiClient& client, const EventsOptions& options) {
  std::string target = "/v1/events?follow=" + std::string(options.follow ? "1" : "0");
  // Without follow, the log from its start; following, only what comes.
  std::optional<std::int64_t> since = options.since;
  if (!since && !options.follow) since = 0;
  if (since) target += "&since=" + std::to_string(*since);
  SseParser parser([&](const SseMessage& m) {
    if (options.json) {
      std::cout << m.data << std::endl;
      return;
    }
    try {
      std::cout << FormatEvent(json::parse(m.data)) << std::endl;
    } catch (const json::exception&) {
      std::cout << m.data << std::endl;
    }
  });
  client.Download(target, [&](std::string_view bytes) { parser.Feed(bytes); });
  return 0;
}

std::string HumanBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "K", "M", "G", "T"};
  std::size_t unit = 0;
  while (bytes >= 1024 && unit + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f}B", bytes) : fmt::format("{:.1f}{}", bytes, kUnits[unit]);
}

std::string HumanDuration(std::int64_t seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 60) return fmt::format("{}s", seconds);
  if (seconds < 3600) return fmt::format("{}m{:02}s", seconds / 60, seconds % 60);
  if (seconds < 86400) return fmt::format("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60);
  return fmt::format("{}d{:02}h", seconds / 86400, (seconds % 86400) / 3600);
}

std::string RenderTop(const json& before, const json& now, unsigned columns) {
  std::map<std::string, const json*> previous;
  if (before.is_object() && before.contains("sandboxes")) {
    for (const json& s : before.at("sandboxes")) previous[s.value("id", "")] = &s;
  }
  const double elapsed =
      before.is_object()
          ? static_cast<double>(now.value("at_ms", 0LL) - before.value("at_ms", 0LL)) / 1000.0
          : 0;
  const std::int64_t at = now.value("at_ms", 0LL) / 1000;
  const json& list = now.value("sandboxes", json::array());
  double cpu_total = 0, memory_total = 0;
  std::string rows;
  for (const json& s : list) {
    const std::string id = s.value("id", "");
    std::string cpu = "-";
    if (s.contains("cpu_seconds") && elapsed > 0) {
      auto it = previous.find(id);
      if (it != previous.end() && it->second->contains("cpu_seconds")) {
        const double used =
            s["cpu_seconds"].get<double>() - (*it->second)["cpu_seconds"].get<double>();
        const double percent = std::max(0.0, used / elapsed * 100);
        cpu_total += percent;
        cpu = fmt::format("{:.1f}", percent);
      }
    }
    std::string memory = "-";
    if (s.contains("memory_bytes")) {
      memory_total += s["memory_bytes"].get<double>();
      memory = HumanBytes(s["memory_bytes"].get<double>());
    }
    const json& expires = s.value("expires_at", json());
    const std::string ttl =
        expires.is_number() ? HumanDuration(expires.get<std::int64_t>() - at) : std::string("-");
    std::string name = s.value("name", "");
    std::string row = fmt::format(
        "{:<12} {:<14} {:<9} {:<8} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}", id.substr(0, 12),
        name.empty() ? "-" : name.substr(0, 14), s.value("kind", ""), s.value("state", ""), cpu,
        memory, HumanBytes(s.value("received_bytes", 0.0)), HumanBytes(s.value("sent_bytes", 0.0)),
        HumanDuration(at - s.value("created_at", at)), ttl);
    rows += row.substr(0, columns) + "\n";
  }
  std::string header =
      fmt::format("{:<12} {:<14} {:<9} {:<8} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7}", "ID", "NAME",
                  "KIND", "STATE", "CPU%", "MEM", "RX", "TX", "AGE", "TTL");
  std::string summary =
      fmt::format("ephemera top - {} - {} sandbox(es), CPU {:.1f}%, memory {}", LocalTime(at),
                  list.size(), cpu_total, HumanBytes(memory_total));
  return summary.substr(0, columns) + "\n\n" + header.substr(0, columns) + "\n" + rows;
}

int RunTop(ApiClient& client, const TopOptions& options) {
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  auto columns = [&]() -> unsigned {
    winsize size{};
    if (terminal && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
      return size.ws_col;
    }
    return 200;
  };
  json before;
  json now = client.Request("GET", "/v1/usage");
  if (options.once) {
    std::this_thread::sleep_for(options.interval);
    before = std::move(now);
    now = client.Request("GET", "/v1/usage");
    std::cout << RenderTop(before, now, columns());
    return 0;
  }
  for (;;) {
    // Home and clear, then the frame: no flicker of a scrolled screen.
    std::cout << (terminal ? "\x1b[H\x1b[2J" : "") << RenderTop(before, now, columns())
              << std::flush;
    std::this_thread::sleep_for(options.interval);
    before = std::move(now);
    now = client.Request("GET", "/v1/usage");
  }
}

}  // namespace ephemera::cli

#include "vm/console.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "core/text.h"
#include "core/unique_fd.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;

std::string ConsoleTail(const std::filesystem::path& log, std::size_t max_lines) {
  std::string text;
  try {
    text = ReadFile(log);
  } catch (const Error&) {
  }
  // Just after a rotation the newest lines may be few: take the older file's too.
  if (std::count(text.begin(), text.end(), '\n') <= static_cast<long>(max_lines)) {
    try {
      std::filesystem::path previous = log;
      previous += ".1";
      text = ReadFile(previous) + text;
    } catch (const Error&) {
    }
  }
  std::size_t pos = text.size();
  std::size_t lines = 0;
  while (pos > 0 && lines <= max_lines) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++lines;
  }
  std::string tail = text.substr(pos == 0 ? 0 : pos + 1);
  for (char& c : tail) {
    if (c == '\r' || (static_cast<unsigned char>(c) < 0x20 && c != '\n')) c = ' ';
  }
  return tail;
}

std::chrono::milliseconds WaitForConsoleMarker(const std::filesystem::path& log,
                                               const std::string& marker,
                                               std::chrono::milliseconds timeout,
                                               const std::function<bool()>& still_running) {
  const auto start = Clock::now();
  UniqueFd fd;
  std::string window;  // unread tail, kept long enough to catch a split marker
  off_t offset = 0;
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    if (!fd) fd.reset(::open(log.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd) {
      ssize_t n;
      while ((n = ::pread(fd.get(), buffer.data(), buffer.size(), offset)) > 0) {
        offset += n;
        window.append(buffer.data(), static_cast<std::size_t>(n));
        if (window.find(marker) != std::string::npos) {
          return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
        }
        if (window.size() > marker.size()) window.erase(0, window.size() - marker.size());
      }
    }
    if (!still_running()) {
      Fail(ErrorCode::kUnavailable, "the VM stopped before printing '{}'; console ends with: {}",
           marker, EscapeForLog(ConsoleTail(log)));
    }
    if (Clock::now() - start > timeout) {
      Fail(ErrorCode::kTimeout,
           "'{}' did not appear on the console within {} ms; console ends with: {}", marker,
           timeout.count(), EscapeForLog(ConsoleTail(log)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace ephemera

// Watching a guest's serial console log for a line, e.g. the marker the
// default image's init prints when it starts.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace ephemera {

// Polls `log` until it contains `marker`, returning the time waited.
// kTimeout after `timeout`; kUnavailable as soon as `still_running`
// returns false (the VM died), quoting the console's last lines.
std::chrono::milliseconds WaitForConsoleMarker(const std::filesystem::path& log,
                                               const std::string& marker,
                                               std::chrono::milliseconds timeout,
                                               const std::function<bool()>& still_running);

// The last `max_lines` lines of a console log (for error messages).
std::string ConsoleTail(const std::filesystem::path& log, std::size_t max_lines = 10);

}  // namespace ephemera

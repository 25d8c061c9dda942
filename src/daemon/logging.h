// Process-wide logging setup for ephemerad (spdlog to stderr).
#pragma once

#include <string>

namespace ephemera {

// level: trace|debug|info|warn|error; format: text|json (one object a line).
void SetupLogging(const std::string& level, const std::string& format);

}  // namespace ephemera

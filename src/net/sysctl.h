// The few kernel settings sandbox networking depends on.
#pragma once

#include <string>

namespace ephemera {

// Writes /proc/sys/<key with '.' as '/'> and returns the previous value.
std::string SetSysctl(const std::string& key, const std::string& value);
std::string GetSysctl(const std::string& key);

}  // namespace ephemera

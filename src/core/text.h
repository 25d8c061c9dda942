// Text that came from outside (a guest's console, a program's stderr) made
// safe for one log line: no control character, no newline, no invalid byte
// can forge or break a line of the daemon's log.
#pragma once

#include <string>
#include <string_view>

namespace ephemera {

// Printable ASCII as it is; "\n", "\r", "\t" and "\\" escaped; every other
// byte as \xNN. At most `max_bytes` of input (then "...").
std::string EscapeForLog(std::string_view text, std::size_t max_bytes = 4096);

// Text for an XML element or attribute: & < > ' " as entities. XML 1.0
// has no place for control characters but tab and newlines: each becomes
// `control_replacement`, or (when that is '\0') kInvalidArgument.
std::string XmlEscape(std::string_view text, char control_replacement = '\0');

}  // namespace ephemera

#include "core/text.h"

#include <fmt/format.h>

#include "core/error.h"

namespace ephemera {

std::string EscapeForLog(std::string_view text, std::size_t max_bytes) {
  std::string out;
  const bool cut = text.size() > max_bytes;
  if (cut) text = text.substr(text.size() - max_bytes);  // the end says most
  out.reserve(text.size() + 16);
  if (cut) out += "...";
  for (unsigned char c : text) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(static_cast<char>(c));
        } else {
          out += fmt::format("\\x{:02x}", c);
        }
    }
  }
  return out;
}

std::string XmlEscape(std::string_view text, char control_replacement) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          if (control_replacement == '\0') {
            Fail(ErrorCode::kInvalidArgument, "a control character cannot go into XML");
          }
          c = control_replacement;
        }
        out.push_back(c);
    }
  }
  return out;
}

}  // namespace ephemera

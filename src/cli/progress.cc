#include "cli/progress.h"

#include <cinttypes>
#include <nlohmann/json.hpp>

namespace ephemera::cli {

namespace {

std::string Size(std::uint64_t bytes) {
  char buffer[32];
  if (bytes < 1024 * 1024) {
    std::snprintf(buffer, sizeof buffer, "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.1f MiB", static_cast<double>(bytes) / (1024 * 1024));
  }
  return buffer;
}

// What a server sent reaches a terminal: nothing that could steer it.
std::string Printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? char(c) : '?';
  return out;
}

}  // namespace

std::string PullProgressPrinter::Describe(const std::string& reference, std::size_t layer,
                                          std::size_t layers, std::uint64_t bytes,
                                          std::uint64_t total, bool cached) {
  std::string text = Printable(reference) + ": ";
  if (layer == 0) return text + "resolving";
  text += "layer " + std::to_string(layer) + "/" + std::to_string(layers) + ": ";
  if (cached) return text + Size(total) + ", in the blob store";
  return text + Size(bytes) + " of " + Size(total);
}

void PullProgressPrinter::Line(std::string_view line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("progress") || !j["progress"].is_object()) return;
  const auto& p = j["progress"];
  auto number = [&](const char* key) -> std::uint64_t {
    auto it = p.find(key);
    return it != p.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
  };
  const std::string reference = p.value("reference", std::string());
  const std::uint64_t bytes = number("bytes"), total = number("total");
  const std::size_t layer = number("layer"), layers = number("layers");
  const bool cached = p.value("cached", false);
  const std::string text = Describe(reference, layer, layers, bytes, total, cached);
  if (terminal_) {
    std::fprintf(out_, "\r\033[K%s", text.c_str());
    drawn_ = true;
  } else if (layer != 0 && bytes == total) {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void PullProgressPrinter::Done() {
  if (drawn_) std::fprintf(out_, "\n");
  drawn_ = false;
}

}  // namespace ephemera::cli

// `ephemera image pull`'s progress: the daemon's NDJSON progress lines
// rendered on stderr, one line redrawn in place on a terminal, one line per
// finished layer otherwise (a log keeps what it needs and no more).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace ephemera::cli {

class PullProgressPrinter {
 public:
  PullProgressPrinter(std::FILE* out, bool terminal) : out_(out), terminal_(terminal) {}
  ~PullProgressPrinter() { Done(); }
  // One line of the answer; lines that are not progress are ignored.
  void Line(std::string_view line);
  // Ends a line redrawn in place.
  void Done();

  // "docker://r/k:1: layer 2/3: 1.5 MiB of 4.0 MiB" and the like.
  static std::string Describe(const std::string& reference, std::size_t layer, std::size_t layers,
                              std::uint64_t bytes, std::uint64_t total, bool cached);

 private:
  std::FILE* out_;
  bool terminal_;
  bool drawn_ = false;
};

}  // namespace ephemera::cli

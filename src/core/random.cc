#include "core/random.h"

#include <sys/random.h>

#include <cerrno>
#include <vector>

#include "core/error.h"

namespace ephemera {

void FillRandom(std::span<std::byte> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno("getrandom", errno);
    }
    done += static_cast<std::size_t>(n);
  }
}

std::string RandomString(std::size_t length, std::string_view alphabet) {
  if (alphabet.empty() || alphabet.size() > 256) {
    Fail(ErrorCode::kInternal, "RandomString: alphabet of {} characters", alphabet.size());
  }
  // Accept only bytes below the largest multiple of the alphabet size.
  const unsigned limit = 256 - (256 % alphabet.size());
  std::string result;
  result.reserve(length);
  std::vector<std::byte> pool(length + 32);
  while (result.size() < length) {
    FillRandom(pool);
    for (std::byte b : pool) {
      auto v = static_cast<unsigned>(b);
      if (v >= limit) continue;
      result.push_back(alphabet[v % alphabet.size()]);
      if (result.size() == length) break;
    }
  }
  return result;
}

}  // namespace ephemera

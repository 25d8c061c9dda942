// Every JSON request parser a front door runs on bytes from the network:
// each either returns a value or throws ephemera::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "api/anweddol_verbs.h"
#include "api/wire.h"
#include "core/error.h"

namespace {

template <typename F>
void Expect(F parse) {
  try {
    parse();
  } catch (const ephemera::Error&) {
    // A clear error is the right answer to bad input.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  Expect([&] { ephemera::ParseCreateRequest(body); });
  Expect([&] { ephemera::ParseNewAccessToken(body); });
  Expect([&] { ephemera::ParseTokenEnabled(body); });
  Expect([&] { ephemera::ParseAnweddolRequest(body); });
  return 0;
}

// Every JSON request parser a front door runs on bytes from the network:
// each either returns a value or throws ephemera::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "api/anweddol_verbs.h"
#include "api/wire.h"
#include "core/error.h"
#include "expect_error.h"

using ephemera::fuzz::ExpectValueOrError;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  ExpectValueOrError([&] { ephemera::ParseCreateRequest(body); });
  ExpectValueOrError([&] { ephemera::ParseNewAccessToken(body); });
  ExpectValueOrError([&] { ephemera::ParseTokenEnabled(body); });
  ExpectValueOrError([&] { ephemera::ParseAnweddolRequest(body); });
  return 0;
}

// The Anweddol classic protocol's decoders (length field, encrypted header,
// encrypted body and next IV) on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "api/anweddol_classic_channel.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ephemera::anweddol::FuzzClassicDecoders(data, size);
  return 0;
}

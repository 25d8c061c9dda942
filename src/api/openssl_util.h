// Small RAII and error helpers shared by the code that uses OpenSSL
// directly (the TLS identity and the Anweddol classic channel).
#pragma once

#include <openssl/bio.h>

#include <memory>
#include <string>
#include <string_view>

namespace ephemera::openssl {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

// The first queued OpenSSL error as text, clearing the queue (it is per
// thread, and a stale entry would be blamed on the next failure).
std::string TakeError();

// A read-only memory BIO over `data` (kInvalidArgument if over INT_MAX).
Bio MemoryBio(std::string_view data);
// Everything written to a memory BIO.
std::string BioContents(BIO* bio);

}  // namespace ephemera::openssl

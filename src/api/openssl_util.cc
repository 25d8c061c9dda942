#include "api/openssl_util.h"

#include <openssl/err.h>

#include <climits>

#include "core/error.h"

namespace ephemera::openssl {

std::string TakeError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof buffer);
  return buffer;
}

Bio MemoryBio(std::string_view data) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) {
    Fail(ErrorCode::kInvalidArgument, "PEM too large");
  }
  Bio bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) Fail(ErrorCode::kInternal, "BIO_new_mem_buf: {}", TakeError());
  return bio;
}

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(size > 0 ? size : 0));
}

}  // namespace ephemera::openssl

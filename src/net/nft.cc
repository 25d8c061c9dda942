#include "net/nft.h"

#include <fmt/format.h>
#include <nftables/libnftables.h>

#include "core/error.h"

namespace ephemera {

NftContext::NftContext() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
  if (!ctx_) Fail(ErrorCode::kInternal, "cannot create an nftables context");
  nft_ctx_buffer_output(ctx_);
  nft_ctx_buffer_error(ctx_);
}

NftContext::~NftContext() { nft_ctx_free(ctx_); }

std::string NftContext::Run(const std::string& script, std::string_view what, bool terse) {
  std::lock_guard lock(mutex_);
  nft_ctx_output_set_flags(ctx_, terse ? NFT_CTX_OUTPUT_TERSE : 0);
  int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
  std::string output = nft_ctx_get_output_buffer(ctx_);
  std::string errors = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    while (!errors.empty() && errors.back() == '\n') errors.pop_back();
    ErrorCode code = ErrorCode::kInternal;
    if (errors.find("Operation not permitted") != std::string::npos) {
      code = ErrorCode::kPermissionDenied;
    } else if (errors.find("Operation not supported") != std::string::npos ||
               errors.find("Protocol not supported") != std::string::npos) {
      code = ErrorCode::kUnavailable;
    }
    Fail(code, "nftables refused {}: {}", what, errors);
  }
  return output;
}

void NftContext::DeleteTable(std::string_view name) {
  // "table ... {}" first makes the delete valid when the table is absent.
  Run(fmt::format("table inet {0} {{}}\ndelete table inet {0}\n", name),
      fmt::format("the {} table", name));
}

std::string NftContext::ListTable(std::string_view name, bool terse) {
  try {
    return Run(fmt::format("list table inet {}", name), fmt::format("the {} table", name), terse);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInternal) throw;
    return "";  // absent
  }
}

}  // namespace ephemera

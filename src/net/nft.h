// One libnftables context: runs nft scripts (each buffer one atomic
// transaction) and turns nftables' complaints into errors with context.
#pragma once

#include <mutex>
#include <string>

struct nft_ctx;

namespace ephemera {

class NftContext {
 public:
  NftContext();
  ~NftContext();
  NftContext(const NftContext&) = delete;
  NftContext& operator=(const NftContext&) = delete;

  // Runs `script`; returns what nft printed. kPermissionDenied without
  // CAP_NET_ADMIN, kUnavailable when the kernel lacks nf_tables,
  // kInternal otherwise; `what` names the table for the message. `terse`:
  // listings leave out set elements.
  std::string Run(const std::string& script, std::string_view what, bool terse = false);
  // Deletes table `inet <name>`; absent is fine (idempotent).
  void DeleteTable(std::string_view name);
  // `list table inet <name>` (terse: without set elements), or "" when absent.
  std::string ListTable(std::string_view name, bool terse = false);

 private:
  std::mutex mutex_;
  nft_ctx* ctx_;
};

}  // namespace ephemera

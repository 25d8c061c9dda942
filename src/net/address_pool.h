// The pool of /30 subnets sandbox networks are carved from. Thread-safe.
// It holds no state of its own on disk: the allocations are recorded with
// each sandbox's network and handed back with Reserve() at startup.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string_view>

#include "core/ipv4.h"
#include "core/sandbox_id.h"

namespace ephemera {

class AddressPool {
 public:
  // kInvalidArgument unless `pool` is IPv4 and holds at least one /30.
  explicit AddressPool(Ipv4Cidr pool);

  std::uint32_t capacity() const { return capacity_; }
  std::size_t in_use() const;

  // The next free subnet after the last one handed out (so a released
  // subnet is not reused at once, while ARP caches still remember it).
  // kResourceExhausted when none is free; kAlreadyExists if `owner` holds one.
  Subnet30 Allocate(const SandboxId& owner);

  // The subnet derived from (run id, machine name), the same on every host
  // and run; kAlreadyExists, naming the holder, if another sandbox has it.
  Subnet30 AllocateDerived(const SandboxId& owner, std::string_view run_id,
                           std::string_view machine);

  // Takes a specific subnet back (rebuilding the pool after a restart).
  Subnet30 Reserve(const SandboxId& owner, std::uint32_t index);

  // Frees the owner's subnet; releasing nothing is fine (idempotent).
  void Release(const SandboxId& owner);

  std::optional<Subnet30> Find(const SandboxId& owner) const;
  // The pool index of an address's /30, if the address is in the pool.
  std::optional<std::uint32_t> IndexOf(Ipv4 address) const;

 private:
  Subnet30 At(std::uint32_t index) const;
  Subnet30 TakeLocked(const SandboxId& owner, std::uint32_t index);

  Ipv4Cidr pool_;
  std::uint32_t capacity_;
  mutable std::mutex mutex_;
  std::map<std::uint32_t, SandboxId> holders_;
  std::map<SandboxId, std::uint32_t> by_owner_;
  std::uint32_t next_ = 0;
};

}  // namespace ephemera

#include "net/address_pool.h"

#include "core/error.h"
#include "core/sha256.h"

namespace ephemera {

AddressPool::AddressPool(Ipv4Cidr pool) : pool_(pool) {
  if (pool.prefix > 30) {
    Fail(ErrorCode::kInvalidArgument, "address pool {} is too small: it must hold at least one /30",
         pool.str());
  }
  capacity_ = static_cast<std::uint32_t>(pool.size() / 4);
}

std::size_t AddressPool::in_use() const {
  std::lock_guard lock(mutex_);
  return holders_.size();
}

Subnet30 AddressPool::At(std::uint32_t index) const {
  return Subnet30{index, Ipv4{pool_.base.value + index * 4}};
}

Subnet30 AddressPool::TakeLocked(const SandboxId& owner, std::uint32_t index) {
  if (auto it = by_owner_.find(owner); it != by_owner_.end()) {
    Fail(ErrorCode::kAlreadyExists, "sandbox {} already holds subnet {}", owner.str(),
         At(it->second).cidr());
  }
  if (auto it = holders_.find(index); it != holders_.end()) {
    Fail(ErrorCode::kAlreadyExists, "subnet {} is already in use by sandbox {}", At(index).cidr(),
         it->second.str());
  }
  holders_.emplace(index, owner);
  by_owner_.emplace(owner, index);
  return At(index);
}

Subnet30 AddressPool::Allocate(const SandboxId& owner) {
  std::lock_guard lock(mutex_);
  if (holders_.size() >= capacity_) {
    Fail(ErrorCode::kResourceExhausted, "address pool {} is exhausted ({} subnets in use)",
         pool_.str(), holders_.size());
  }
  std::uint32_t index = next_;
  while (holders_.count(index)) index = (index + 1) % capacity_;
  Subnet30 subnet = TakeLocked(owner, index);
  next_ = (index + 1) % capacity_;
  return subnet;
}

Subnet30 AddressPool::AllocateDerived(const SandboxId& owner, std::string_view run_id,
                                      std::string_view machine) {
  if (run_id.empty() || machine.empty()) {
    Fail(ErrorCode::kInvalidArgument, "a derived subnet needs a run id and a machine name");
  }
  std::string key = std::string(run_id) + '\0' + std::string(machine);
  std::string digest = Sha256Hex(key);
  std::uint32_t hash = static_cast<std::uint32_t>(std::stoul(digest.substr(0, 8), nullptr, 16));
  std::lock_guard lock(mutex_);
  try {
    return TakeLocked(owner, hash % capacity_);
  } catch (const Error& e) {
    throw e.WithContext(fmt::format("run '{}' machine '{}'", run_id, machine));
  }
}

Subnet30 AddressPool::Reserve(const SandboxId& owner, std::uint32_t index) {
  if (index >= capacity_) {
    Fail(ErrorCode::kInvalidArgument, "subnet index {} is outside pool {}", index, pool_.str());
  }
  std::lock_guard lock(mutex_);
  return TakeLocked(owner, index);
}

void AddressPool::Release(const SandboxId& owner) {
  std::lock_guard lock(mutex_);
  auto it = by_owner_.find(owner);
  if (it == by_owner_.end()) return;
  holders_.erase(it->second);
  by_owner_.erase(it);
}

std::optional<Subnet30> AddressPool::Find(const SandboxId& owner) const {
  std::lock_guard lock(mutex_);
  auto it = by_owner_.find(owner);
  if (it == by_owner_.end()) return std::nullopt;
  return At(it->second);
}

std::optional<std::uint32_t> AddressPool::IndexOf(Ipv4 address) const {
  if (!pool_.Contains(address)) return std::nullopt;
  return (address.value - pool_.base.value) / 4;
}

}  // namespace ephemera

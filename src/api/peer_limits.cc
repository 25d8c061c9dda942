#include "api/peer_limits.h"

#include <algorithm>

namespace ephemera {

namespace ip = boost::asio::ip;

std::string PeerKey(const ip::address& address) {
  if (address.is_v4()) return address.to_string();
  ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return ip::make_address_v6(bytes).to_string() + "/64";
}

bool PeerSlots::Take(const std::string& key) {
  std::lock_guard lock(mutex_);
  std::size_t& count = held_[key];
  if (count >= per_peer_) {
    if (count == 0) held_.erase(key);
    return false;
  }
  ++count;
  return true;
}

void PeerSlots::Release(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = held_.find(key);
  if (it != held_.end() && --it->second == 0) held_.erase(it);
}

std::size_t PeerSlots::Held(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = held_.find(key);
  return it == held_.end() ? 0 : it->second;
}

}  // namespace ephemera

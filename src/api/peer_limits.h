// How the remote front doors count a peer: an IPv4 address alone, an IPv6
// address by its /64 (one subscriber usually holds a whole /64, so counting
// single addresses would give it billions of slots). Used for connection
// caps, handshake budgets and rate limits alike.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <string>

#include <boost/asio/ip/address.hpp>

namespace ephemera {

// "1.2.3.4" or "2001:db8:1:2::/64"; an IPv4-mapped IPv6 address counts as IPv4.
std::string PeerKey(const boost::asio::ip::address& address);

// Open connections per peer key, capped. Thread-safe.
class PeerSlots {
 public:
  explicit PeerSlots(std::size_t per_peer) : per_peer_(per_peer) {}
  // False (and nothing taken) when the peer already holds `per_peer` slots.
  bool Take(const std::string& key);
  void Release(const std::string& key);
  std::size_t Held(const std::string& key) const;

 private:
  const std::size_t per_peer_;
  mutable std::mutex mutex_;
  std::map<std::string, std::size_t> held_;
};

}  // namespace ephemera

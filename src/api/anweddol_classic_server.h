// The Anweddol classic protocol server (TCP, default port 6150): one request
// per connection, after an RSA/AES key exchange (anweddol_classic_channel.h).
//
// I/O is asynchronous on one Boost.Asio thread, with a deadline on every
// read and write step, so a silent or slow client delays nobody and is
// dropped after io_timeout. RSA private-key work and the handler (which may
// block for seconds: it boots a VM) run on a bounded worker pool; one-time
// keys are made ahead by a single thread of their own.
//
// The session key is the server's: the client's key and IV are checked but
// never used or reflected, so a recorded session cannot be replayed to
// learn its key. A refused handshake step or message header is answered
// with the ack byte '0' and the connection closes; a message body that does
// not decrypt, or does not decrypt to a JSON object, gets
// {"success":false,"message":"Bad request","data":{}} (the same answer, so
// padding errors are indistinguishable); a handler that throws gets
// "Internal error".
//
// One peer cannot take the door: connections, key exchanges and one-time
// keys are capped per peer (an IPv6 /64 counts as one), every connection has
// a whole-handshake deadline, and handlers run on threads of their own so
// that slow CREATEs never hold up the RSA work of other clients.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace ephemera {

struct AnweddolClassicOptions {
  boost::asio::ip::tcp::endpoint listen;  // port 0 = ephemeral
  std::filesystem::path key_file;         // server RSA private key PEM; generated (0600) if absent
  unsigned rsa_bits = 4096;
  bool one_time_keys = false;  // a fresh key pair per connection (key_file unused then)
  // With one_time_keys: key pairs kept ready, made by one background thread
  // (so at most one core), each used for one connection only. A connection
  // that finds none waits for the next, up to io_timeout (0: none kept ahead).
  std::size_t one_time_key_pool = 4;
  std::size_t workers = 4;            // threads for RSA work (the CPU-bound part)
  std::size_t handler_workers = 32;   // threads for verb handlers, which may block for seconds
  std::size_t max_connections = 128;  // open connections; over it a new one is closed at once
  // Per peer (an IPv4 address, an IPv6 /64): open connections, and key
  // exchanges started per minute (checked at accept, before any RSA work),
  // and one-time keys taken per minute. Over a budget a connection is
  // closed at once.
  std::size_t max_connections_per_peer = 8;
  double handshakes_per_minute = 120;
  double handshake_burst = 20;
  double one_time_keys_per_minute = 30;
  double one_time_key_burst = 4;
  std::chrono::milliseconds io_timeout{10000};         // each read/write step
  std::chrono::milliseconds handshake_timeout{30000};  // accept to the whole request read
  std::size_t max_message_bytes = 64 * 1024;
};

// The decrypted request body (raw JSON text, not yet parsed) and the peer
// address; returns the response object {success, message, data} to send.
// Called on the worker threads, so possibly concurrently.
using AnweddolRequestHandler =
    std::function<nlohmann::json(std::string_view body, const boost::asio::ip::address& peer)>;
using PeerAdmission = std::function<bool(const boost::asio::ip::address&)>;

class AnweddolClassicServer {
 public:
  // Binds and starts serving; kUnavailable/kPermissionDenied with the address on failure,
  // a clear error naming the key file if it exists but is not a valid RSA private key.
  AnweddolClassicServer(AnweddolClassicOptions options, AnweddolRequestHandler handler,
                        PeerAdmission admit = {});
  ~AnweddolClassicServer();  // stops accepting, closes connections, joins threads

  AnweddolClassicServer(const AnweddolClassicServer&) = delete;
  AnweddolClassicServer& operator=(const AnweddolClassicServer&) = delete;

  std::uint16_t port() const;
  std::string public_key_sha256() const;  // persistent key's fingerprint ("" with one_time_keys)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ephemera

#include "api/anweddol_classic_server.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/anweddol_classic_channel.h"
#include "api/peer_limits.h"
#include "api/rate_limiter.h"
#include "api/wire.h"
#include "core/error.h"

namespace ephemera {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace aw = anweddol;
using tcp = asio::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// After our last byte we wait this long (at most) for the peer's FIN, so
// that closing with unread input does not reset the connection and destroy
// the answer in flight.
constexpr auto kLingerTimeout = 2s;
constexpr std::size_t kLingerDiscardBytes = 64 * 1024;
constexpr auto kAcceptRetry = 100ms;  // after an accept error such as EMFILE
constexpr auto kKeyRetry = 1s;        // after a failed one-time key generation

bool IsJsonObject(std::string_view text) {
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_object();
}

json Failure(std::string_view message) {
  return {{"success", false}, {"message", message}, {"data", json::object()}};
}

asio::ip::address Normalize(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address;
}

std::string EndpointText(const tcp::endpoint& endpoint) {
  if (endpoint.address().is_v6()) {
    return fmt::format("[{}]:{}", endpoint.address().to_string(), endpoint.port());
  }
  return fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
}

// One-time server keys, made ahead of need by one thread: however many
// connections arrive, key generation uses at most one core, and a
// connection without a ready key waits for the next one instead of making
// its own on a worker.
class KeyPool {
 public:
  struct Key {
    std::shared_ptr<const aw::RsaKey> key;
    std::string pem;
  };
  // Called at most once, on the generator's thread or the caller of Return,
  // without the pool's lock held; it must only hand the key on.
  using Waiter = std::function<void(Key)>;

  KeyPool(unsigned bits, std::size_t capacity) : bits_(bits), capacity_(capacity) {}
  ~KeyPool() { Stop(); }
  KeyPool(const KeyPool&) = delete;
  KeyPool& operator=(const KeyPool&) = delete;

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  // Stops the generator (mid-key too) and forgets the waiters. Idempotent.
  void Stop() {
    std::deque<std::pair<std::uint64_t, Waiter>> waiters;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      ready_.clear();
      waiters.swap(waiters_);
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // A ready key; or, if there is none, nullopt once `waiter` is queued for
  // the next key, under `*ticket` (for Cancel).
  std::optional<Key> TakeOrWait(Waiter waiter, std::uint64_t* ticket) {
    std::unique_lock lock(mu_);
    if (!ready_.empty()) {
      Key key = std::move(ready_.front());
      ready_.pop_front();
      lock.unlock();
      cv_.notify_all();  // room to refill
      return key;
    }
    *ticket = 0;
    if (stopping_) return std::nullopt;
    *ticket = ++next_ticket_;
    waiters_.emplace_back(*ticket, std::move(waiter));
    lock.unlock();
    cv_.notify_all();  // with a pool of 0, a waiter is what starts a key
    return std::nullopt;
  }

  // False if that waiter was already served: its key is then on its way.
  bool Cancel(std::uint64_t ticket) {
    std::lock_guard lock(mu_);
    auto it = std::find_if(waiters_.begin(), waiters_.end(),
                           [ticket](const auto& w) { return w.first == ticket; });
    if (it == waiters_.end()) return false;
    waiters_.erase(it);
    return true;
  }

  // A key handed to a waiter that closed before sending it: no peer has
  // seen it, so it may serve another connection.
  void Return(Key key) { Offer(std::move(key)); }

 private:
  void Run() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock,
                 [this] { return stopping_ || ready_.size() < capacity_ || !waiters_.empty(); });
        if (stopping_) return;
      }
      Key key;
      try {
        auto fresh = std::make_shared<aw::RsaKey>(
            aw::RsaKey::Generate(bits_, [this] { return !stopping_.load(); }));
        key.pem = fresh->PublicPem();
        key.key = std::move(fresh);
      } catch (const std::exception& e) {
        std::unique_lock lock(mu_);
        if (stopping_) return;
        spdlog::error("anweddol: one-time RSA-{} key generation: {}", bits_, e.what());
        cv_.wait_for(lock, kKeyRetry, [this] { return stopping_.load(); });
        continue;
      }
      Offer(std::move(key));
    }
  }

  // The oldest waiter gets the key, else the pool if it has room.
  void Offer(Key key) {
    Waiter waiter;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (waiters_.empty()) {
        if (ready_.size() < capacity_) ready_.push_back(std::move(key));
        return;
      }
      waiter = std::move(waiters_.front().second);
      waiters_.pop_front();
    }
    waiter(std::move(key));
  }

  const unsigned bits_;
  const std::size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};  // written under mu_; read without it to cancel a key
  std::deque<Key> ready_;              // guarded by mu_
  std::deque<std::pair<std::uint64_t, Waiter>> waiters_;  // guarded by mu_, oldest first
  std::uint64_t next_ticket_ = 0;                         // guarded by mu_
  std::thread thread_;
};

class Session;

// What every session needs; sessions hold it by shared_ptr, so it outlives
// the last of them whichever thread releases it.
struct Shared {
  AnweddolClassicOptions options;
  AnweddolRequestHandler handler;
  std::shared_ptr<const aw::RsaKey> key;  // null with one_time_keys
  std::shared_ptr<KeyPool> keys;          // with one_time_keys only
  std::string key_pem;
  std::string key_sha256;
  std::atomic<std::size_t> open{0};
  std::unique_ptr<PeerSlots> per_peer;  // open connections per peer key
  RateLimiter handshakes;               // key exchanges per peer key
  RateLimiter one_time_keys;            // one-time keys per peer key
  std::mutex mu;
  std::unordered_map<const Session*, std::weak_ptr<Session>> sessions;  // guarded by mu
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `peer_key` holds a slot of shared->per_peer, released with the session.
  Session(tcp::socket socket, asio::ip::address peer, std::string peer_key,
          std::shared_ptr<Shared> shared, asio::thread_pool& crypto, asio::thread_pool& handlers)
      : stream_(std::move(socket)),
        key_wait_(stream_.get_executor()),
        handshake_deadline_(stream_.get_executor()),
        peer_(std::move(peer)),
        peer_key_(std::move(peer_key)),
        peer_text_(peer_.to_string()),
        shared_(std::move(shared)),
        crypto_(crypto),
        handlers_(handlers) {
    ++shared_->open;
  }

  ~Session() {
    --shared_->open;
    shared_->per_peer->Release(peer_key_);
    std::lock_guard lock(shared_->mu);
    shared_->sessions.erase(this);
  }

  // All of the following run on the I/O thread.
  void Start() {
    // However slowly a client trickles its steps (each within io_timeout),
    // the whole exchange up to the request must end by this deadline.
    handshake_deadline_.expires_after(options().handshake_timeout);
    handshake_deadline_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_ || self->request_read_) return;
      spdlog::debug("anweddol {}: dropped: the handshake took over {} ms", self->peer_text_,
                    self->options().handshake_timeout.count());
      self->Close();
    });
    ReadExactly(aw::kLengthFieldBytes, "client key length", [this] {
      std::size_t length;
      try {
        length = aw::ParseLengthField(buffer_, aw::kMaxPublicKeyPemBytes);
      } catch (const Error& e) {
        return Refuse("client key length", e.what());
      }
      Write("1", "client key length ack",
            [this, length] { ReadExactly(length, "client key", [this] { OnClientKey(); }); });
    });
  }

  void Abort() {
    if (!closed_) {
      spdlog::debug("anweddol {}: closed (server stopping)", peer_text_);
      Close();
    }
  }

 private:
  using Next = std::function<void()>;

  const AnweddolClassicOptions& options() const { return shared_->options; }

  void ReadExactly(std::size_t size, const char* step, Next next) {
    buffer_.assign(size, '\0');
    stream_.expires_after(options().io_timeout);
    asio::async_read(stream_, asio::buffer(buffer_),
                     [self = shared_from_this(), step, next = std::move(next)](beast::error_code ec,
                                                                               std::size_t) {
                       if (self->closed_) return;
                       if (ec) return self->Drop(step, ec);
                       next();
                     });
  }

  void Write(std::string data, const char* step, Next next) {
    out_ = std::move(data);
    stream_.expires_after(options().io_timeout);
    asio::async_write(stream_, asio::buffer(out_),
                      [self = shared_from_this(), step, next = std::move(next)](
                          beast::error_code ec, std::size_t) {
                        if (self->closed_) return;
                        if (ec) return self->Drop(step, ec);
                        next();
                      });
  }

  void ExpectAck(const char* step, Next next) {
    ReadExactly(1, step, [this, step, next = std::move(next)] {
      if (buffer_[0] != '1') {
        spdlog::debug("anweddol {}: peer refused {}", peer_text_, step);
        return Close();
      }
      next();
    });
  }

  // Runs `work` on `pool`, then `done` on the I/O thread with the exception
  // `work` threw, if any (skipped if the session closed meanwhile).
  void OffIo(asio::thread_pool& pool, Next work, std::function<void(std::exception_ptr)> done) {
    asio::post(pool, [self = shared_from_this(), work = std::move(work),
                      done = std::move(done)]() mutable {
      std::exception_ptr error;
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      asio::post(self->stream_.get_executor(), [self, done = std::move(done), error] {
        if (!self->closed_) done(error);
      });
    });
  }

  // The reason an off-I/O step failed, for the log.
  static std::string Reason(std::exception_ptr error, bool* expected) {
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      *expected = e.code() == ErrorCode::kInvalidArgument;
      return e.what();
    } catch (const std::exception& e) {
      *expected = false;
      return e.what();
    } catch (...) {
      *expected = false;
      return "unknown exception";
    }
  }

  void OnClientKey() {
    OffIo(
        crypto_, [this] { client_key_ = aw::RsaKey::FromPeerPublicPem(buffer_); },
        [this](std::exception_ptr error) {
          if (error) return RefuseAfter("client key", error);
          TakeServerKey();
        });
  }

  // Only a client whose key was accepted gets to use up a one-time key.
  void TakeServerKey() {
    if (shared_->key) {
      server_key_ = shared_->key;
      server_pem_ = shared_->key_pem;
      return SendServerKey();
    }
    // One-time keys are the scarce resource here: one peer may not drain them.
    if (shared_->one_time_keys.Take(peer_key_, options().one_time_keys_per_minute,
                                    options().one_time_key_burst)) {
      spdlog::debug("anweddol {}: refused: over its one-time key budget", peer_text_);
      return Refuse("client key", "over the one-time key budget");
    }
    std::optional<KeyPool::Key> ready = shared_->keys->TakeOrWait(
        [weak = weak_from_this(), pool = std::weak_ptr<KeyPool>(shared_->keys),
         executor = stream_.get_executor()](KeyPool::Key key) {
          asio::post(executor, [weak, pool, key = std::move(key)]() mutable {
            auto self = weak.lock();
            if (self && self->key_ticket_ != 0 && !self->closed_) {
              return self->UseServerKey(std::move(key));
            }
            if (auto keys = pool.lock()) keys->Return(std::move(key));
          });
        },
        &key_ticket_);
    if (ready) return UseServerKey(std::move(*ready));
    spdlog::debug("anweddol {}: waiting for a one-time key (none ready)", peer_text_);
    key_wait_.expires_after(options().io_timeout);
    key_wait_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_ || self->key_ticket_ == 0) return;
      self->shared_->keys->Cancel(self->key_ticket_);
      self->key_ticket_ = 0;
      spdlog::debug("anweddol {}: dropped: no one-time key within {} ms", self->peer_text_,
                    self->options().io_timeout.count());
      self->Close();
    });
  }

  void UseServerKey(KeyPool::Key key) {
    key_ticket_ = 0;
    key_wait_.cancel();
    server_key_ = std::move(key.key);
    server_pem_ = std::move(key.pem);
    SendServerKey();
  }

  void SendServerKey() {
    // The ack of the client's key and our key's length field go together.
    Write("1" + aw::EncodeLengthField(server_pem_.size()), "server key length", [this] {
      ExpectAck("server key length ack", [this] {
        Write(server_pem_, "server key", [this] {
          ExpectAck("server key ack", [this] {
            ReadExactly(server_key_->size_bytes(), "session key", [this] { OnSessionKey(); });
          });
        });
      });
    });
  }

  void OnSessionKey() {
    OffIo(
        crypto_,
        [this] {
          // The client's blob is checked (it must decrypt to a well-formed
          // key and IV) but never used or sent back: reflecting it would let
          // anyone who recorded a session replay the blob under a key of
          // their own and read the recorded session. The session runs under
          // a fresh key and IV of ours, which the Anweddol client adopts.
          std::string plain = aw::RsaOaepDecrypt(*server_key_, buffer_);
          try {
            aw::SessionKey::Parse(plain);
          } catch (...) {
            OPENSSL_cleanse(plain.data(), plain.size());
            throw;
          }
          OPENSSL_cleanse(plain.data(), plain.size());
          session_ = aw::SessionKey::Random();
          std::string serialized = session_.Serialize();
          echo_ = aw::RsaOaepEncrypt(client_key_, serialized);
          OPENSSL_cleanse(serialized.data(), serialized.size());
        },
        [this](std::exception_ptr error) {
          if (error) return RefuseAfter("session key", error);
          Write("1" + echo_, "session key echo",
                [this] { ExpectAck("session key echo ack", [this] { ReadHeader(); }); });
        });
  }

  void ReadHeader() {
    ReadExactly(aw::kHeaderBytes, "request header", [this] {
      std::size_t length;
      try {
        length =
            aw::DecodeLengthHeader(session_.key, session_.iv, buffer_, options().max_message_bytes);
      } catch (const Error& e) {
        return Refuse("request header", e.what());
      }
      Write("1", "request header ack",
            [this, length] { ReadExactly(length, "request body", [this] { OnBody(); }); });
    });
  }

  void OnBody() {
    // The next IV is the raw tail, so even a body that does not decrypt can
    // be answered under it.
    next_iv_ = aw::IvFromBytes(std::string_view(buffer_).substr(buffer_.size() - 16));
    // A body that does not decrypt and one that decrypts to anything but a
    // JSON object get the same answer at the same point, so the answer
    // tells nothing about the padding (no padding oracle).
    try {
      request_ = aw::DecodeBody(session_.key, session_.iv, buffer_).text;
      if (!IsJsonObject(request_)) Fail(ErrorCode::kInvalidArgument, "not a JSON object");
    } catch (const Error& e) {
      OPENSSL_cleanse(request_.data(), request_.size());
      request_.clear();
      spdlog::debug("anweddol {}: request body: {}", peer_text_, e.what());
      return Respond(Failure("Bad request"));
    }
    request_read_ = true;
    handshake_deadline_.cancel();
    OffIo(
        handlers_,
        [this] {
          try {
            response_ = shared_->handler(request_, peer_);
          } catch (const std::exception& e) {
            spdlog::warn("anweddol {}: request handler failed: {}", peer_text_, e.what());
            response_ = Failure("Internal error");
          }
          OPENSSL_cleanse(request_.data(), request_.size());
        },
        [this](std::exception_ptr error) {
          if (error) return Respond(Failure("Internal error"));
          Respond(std::move(response_));
        });
  }

  void Respond(json response) {
    std::string text = JsonText(response);
    message_ = aw::EncodeMessage(session_.key, next_iv_, text, aw::RandomIv());
    OPENSSL_cleanse(text.data(), text.size());
    Write(message_.header, "response header", [this] {
      ExpectAck("response header ack", [this] {
        Write(std::move(message_.body), "response body", [this] {
          spdlog::debug("anweddol {}: request answered", peer_text_);
          Linger();
        });
      });
    });
  }

  // A refused step: the ack byte '0', then close.
  void Refuse(const char* step, std::string_view reason) {
    spdlog::debug("anweddol {}: refused {}: {}", peer_text_, step, reason);
    Write("0", "refusal", [this] { Linger(); });
  }

  void RefuseAfter(const char* step, std::exception_ptr error) {
    bool expected = true;
    std::string reason = Reason(error, &expected);
    if (!expected) spdlog::warn("anweddol {}: {}: {}", peer_text_, step, reason);
    Refuse(step, reason);
  }

  void Drop(const char* step, beast::error_code ec) {
    if (ec == beast::error::timeout) {
      spdlog::debug("anweddol {}: dropped: no progress on {} within {} ms", peer_text_, step,
                    options().io_timeout.count());
    } else if (ec == asio::error::eof) {
      spdlog::debug("anweddol {}: closed by peer during {}", peer_text_, step);
    } else {
      spdlog::debug("anweddol {}: {}: {}", peer_text_, step, ec.message());
    }
    Close();
  }

  // Half-closes, then reads (and discards) until the peer closes too.
  void Linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(
        std::min<std::chrono::milliseconds>(options().io_timeout, kLingerTimeout));
    LingerRead();
  }

  void LingerRead() {
    buffer_.resize(4096);
    stream_.async_read_some(asio::buffer(buffer_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (self->closed_) return;
                              self->discarded_ += n;
                              if (ec || self->discarded_ > kLingerDiscardBytes) {
                                return self->Close();
                              }
                              self->LingerRead();
                            });
  }

  void Close() {
    closed_ = true;
    key_wait_.cancel();
    handshake_deadline_.cancel();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  asio::steady_timer key_wait_;  // while waiting for a one-time key
  asio::steady_timer handshake_deadline_;
  std::uint64_t key_ticket_ = 0;  // nonzero while waiting for a one-time key
  asio::ip::address peer_;
  std::string peer_key_;
  std::string peer_text_;
  std::shared_ptr<Shared> shared_;
  asio::thread_pool& crypto_;
  asio::thread_pool& handlers_;
  bool closed_ = false;        // I/O thread only
  bool request_read_ = false;  // I/O thread only
  std::string buffer_;
  std::string out_;
  std::size_t discarded_ = 0;
  aw::RsaKey client_key_;
  std::shared_ptr<const aw::RsaKey> server_key_;
  std::string server_pem_;
  std::string echo_;
  aw::SessionKey session_;
  aw::AesIv next_iv_{};
  std::string request_;
  json response_;
  aw::EncodedMessage message_;
};

}  // namespace

struct AnweddolClassicServer::Impl {
  std::shared_ptr<Shared> shared;
  PeerAdmission admit;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer retry{io};
  asio::thread_pool crypto;
  asio::thread_pool handlers;
  std::thread thread;
  std::uint16_t port = 0;
  bool stopping = false;  // I/O thread only

  Impl(std::shared_ptr<Shared> s, PeerAdmission a)
      : shared(std::move(s)),
        admit(std::move(a)),
        crypto(std::max<std::size_t>(1, shared->options.workers)),
        handlers(std::max<std::size_t>(1, shared->options.handler_workers)) {}

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (stopping || ec == asio::error::operation_aborted) return;
      if (ec) {
        spdlog::warn("anweddol: accept: {}", ec.message());
        retry.expires_after(kAcceptRetry);
        retry.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec && !stopping) Accept();
        });
        return;
      }
      Admit(std::move(socket));
      Accept();
    });
  }

  void Admit(tcp::socket socket) {
    beast::error_code ec;
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) return;  // already gone
    asio::ip::address peer = Normalize(remote.address());
    if (admit) {
      bool allowed = false;
      try {
        allowed = admit(peer);
      } catch (const std::exception& e) {
        spdlog::warn("anweddol {}: admission check failed: {}", peer.to_string(), e.what());
      }
      if (!allowed) {
        spdlog::debug("anweddol {}: connection refused by the address filter", peer.to_string());
        socket.close(ec);
        return;
      }
    }
    if (shared->open.load() >= shared->options.max_connections) {
      spdlog::warn("anweddol {}: connection refused: {} connections open (the maximum)",
                   peer.to_string(), shared->options.max_connections);
      socket.close(ec);
      return;
    }
    // Budgets per peer, before any RSA work is spent on it.
    std::string key = PeerKey(peer);
    if (shared->handshakes.Take(key, shared->options.handshakes_per_minute,
                                shared->options.handshake_burst)) {
      spdlog::debug("anweddol {}: connection refused: over its handshake budget", key);
      socket.close(ec);
      return;
    }
    if (!shared->per_peer->Take(key)) {
      spdlog::debug("anweddol {}: connection refused: {} connections open from it", key,
                    shared->options.max_connections_per_peer);
      socket.close(ec);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);  // the protocol is all small ping-pong steps
    auto session =
        std::make_shared<Session>(std::move(socket), peer, key, shared, crypto, handlers);
    {
      std::lock_guard lock(shared->mu);
      shared->sessions.emplace(session.get(), session);
    }
    spdlog::debug("anweddol {}: connection accepted", peer.to_string());
    session->Start();
  }

  // On the I/O thread: stop accepting and close every connection.
  void StopAll() {
    stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    retry.cancel();
    std::vector<std::weak_ptr<Session>> sessions;
    {
      std::lock_guard lock(shared->mu);
      for (auto& [raw, weak] : shared->sessions) sessions.push_back(weak);
    }
    for (auto& weak : sessions) {
      if (auto session = weak.lock()) session->Abort();
    }
  }
};

AnweddolClassicServer::AnweddolClassicServer(AnweddolClassicOptions options,
                                             AnweddolRequestHandler handler, PeerAdmission admit) {
  if (!handler) Fail(ErrorCode::kInvalidArgument, "anweddol classic server: no request handler");
  options.max_message_bytes = std::max(options.max_message_bytes, aw::kMinMessageBytes);
  if (options.io_timeout <= std::chrono::milliseconds::zero()) {
    Fail(ErrorCode::kInvalidArgument, "anweddol classic server: io_timeout must be positive");
  }
  if (options.handshake_timeout <= std::chrono::milliseconds::zero()) {
    Fail(ErrorCode::kInvalidArgument,
         "anweddol classic server: handshake_timeout must be positive");
  }
  auto shared = std::make_shared<Shared>();
  shared->options = std::move(options);
  shared->handler = std::move(handler);
  shared->per_peer = std::make_unique<PeerSlots>(
      std::max<std::size_t>(1, shared->options.max_connections_per_peer));
  const AnweddolClassicOptions& opts = shared->options;

  if (opts.one_time_keys) {
    if (opts.rsa_bits < aw::kMinPeerRsaBits || opts.rsa_bits > aw::kMaxPeerRsaBits) {
      Fail(ErrorCode::kInvalidArgument,
           "anweddol classic server: RSA key size {} out of range {}..{}", opts.rsa_bits,
           aw::kMinPeerRsaBits, aw::kMaxPeerRsaBits);
    }
    shared->keys = std::make_shared<KeyPool>(opts.rsa_bits, opts.one_time_key_pool);
  } else {
    if (opts.key_file.empty()) {
      Fail(ErrorCode::kInvalidArgument,
           "anweddol classic server: a key file is required unless one-time keys are on");
    }
    bool generated = false;
    auto key = std::make_shared<aw::RsaKey>(
        aw::RsaKey::LoadOrGenerate(opts.key_file, opts.rsa_bits, &generated));
    shared->key_pem = key->PublicPem();
    shared->key_sha256 = key->PublicSha256();
    if (generated) {
      spdlog::info("anweddol: generated RSA-{} key {} (public key sha256 {})", key->bits(),
                   opts.key_file.string(), shared->key_sha256);
    } else {
      struct stat st {};
      if (::stat(opts.key_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        spdlog::warn("anweddol: key file {} is accessible to others (mode {:o}); use 0600",
                     opts.key_file.string(), st.st_mode & 07777);
      }
    }
    shared->key = std::move(key);
  }

  impl_ = std::make_unique<Impl>(std::move(shared), std::move(admit));
  const tcp::endpoint& listen = impl_->shared->options.listen;
  beast::error_code ec;
  impl_->acceptor.open(listen.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(listen, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    Fail(ec == asio::error::access_denied ? ErrorCode::kPermissionDenied : ErrorCode::kUnavailable,
         "anweddol classic server: cannot listen on {}: {}", EndpointText(listen), ec.message());
  }
  const tcp::endpoint bound = impl_->acceptor.local_endpoint(ec);
  impl_->port = bound.port();
  if (impl_->shared->keys) impl_->shared->keys->Start();
  impl_->Accept();
  impl_->thread = std::thread([impl = impl_.get()] {
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("anweddol: I/O thread: {}", e.what());
      }
    }
  });
  spdlog::info("anweddol: classic protocol on {}", EndpointText(bound));
}

AnweddolClassicServer::~AnweddolClassicServer() {
  std::promise<void> stopped;
  asio::post(impl_->io, [this, &stopped] {
    impl_->StopAll();
    stopped.set_value();
  });
  stopped.get_future().wait();
  // Keys already handed out are posted to sessions that are closed now: they
  // go back to the stopped pool, which drops them.
  if (impl_->shared->keys) impl_->shared->keys->Stop();
  // Work in flight finishes (a handler may be booting a VM); its results find
  // their sessions closed.
  impl_->crypto.join();
  impl_->handlers.join();
  impl_->io.stop();
  impl_->thread.join();
}

std::uint16_t AnweddolClassicServer::port() const { return impl_->port; }

std::string AnweddolClassicServer::public_key_sha256() const { return impl_->shared->key_sha256; }

}  // namespace ephemera

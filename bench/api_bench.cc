// GET /v1/status requests per second against a running ephemerad, over
// kept-alive connections, plain HTTP or HTTPS.
// Usage: api_bench URL [--token T] [--connections N] [--seconds S]
//   URL: http://HOST:PORT or https://HOST:PORT (the certificate is not
//   checked: this measures throughput, not trust)
#include <algorithm>
#include <atomic>
#include <utility>  // before Boost.Asio 1.74, which uses std::exchange

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/parse.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

namespace {

struct Tally {
  std::mutex mutex;
  std::vector<double> latencies_ms;
  std::size_t failures = 0;
};

template <typename Stream>
void Loop(Stream& stream, const ephemera::client::ServerUrl& target, const std::string& token,
          Clock::time_point end, Tally& tally) {
  http::request<http::empty_body> request{http::verb::get, "/v1/status", 11};
  request.set(http::field::host, target.authority());
  request.keep_alive(true);
  if (!token.empty()) request.set(http::field::authorization, "Bearer " + token);
  beast::flat_buffer buffer;
  std::vector<double> latencies;
  std::size_t failures = 0;
  while (Clock::now() < end) {
    auto t0 = Clock::now();
    http::write(stream, request);
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    if (response.result() == http::status::ok) {
      latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    } else {
      ++failures;
    }
  }
  std::lock_guard lock(tally.mutex);
  tally.latencies_ms.insert(tally.latencies_ms.end(), latencies.begin(), latencies.end());
  tally.failures += failures;
}

void Client(const ephemera::client::ServerUrl& target, const std::string& token,
            Clock::time_point end, Tally& tally) {
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    auto endpoints = resolver.resolve(target.host, std::to_string(target.port));
    if (target.tls) {
      asio::ssl::context tls(asio::ssl::context::tls_client);
      tls.set_verify_mode(asio::ssl::verify_none);
      beast::ssl_stream<beast::tcp_stream> stream(io, tls);
      beast::get_lowest_layer(stream).connect(endpoints);
      stream.handshake(asio::ssl::stream_base::client);
      Loop(stream, target, token, end, tally);
    } else {
      beast::tcp_stream stream(io);
      stream.connect(endpoints);
      Loop(stream, target, token, end, tally);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "api_bench: %s\n", e.what());
    std::lock_guard lock(tally.mutex);
    ++tally.failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: api_bench URL [--token T] [--connections N] [--seconds S]\n");
    return 2;
  }
  ephemera::client::ServerUrl target;
  try {
    target = ephemera::client::ParseServerUrl(argv[1]);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "api_bench: %s\n", e.what());
    return 2;
  }
  std::string token;
  int connections = 4;
  int seconds = 5;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--token") {
      token = argv[i + 1];
    } else if (flag == "--connections") {
      connections = std::atoi(argv[i + 1]);
    } else if (flag == "--seconds") {
      seconds = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "api_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  Tally tally;
  auto start = Clock::now();
  auto end = start + std::chrono::seconds(seconds);
  std::vector<std::thread> clients;
  for (int i = 0; i < connections; ++i) {
    clients.emplace_back(Client, std::cref(target), std::cref(token), end, std::ref(tally));
  }
  for (auto& c : clients) c.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  auto& l = tally.latencies_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(p * l.size()))];
  };
  std::printf(
      "api_bench: %s %s, %d kept-alive connections, %.1f s: %.0f STAT/s "
      "(p50 %.2f ms, p99 %.2f ms), %zu failures\n",
      target.tls ? "https" : "http", target.authority().c_str(), connections, elapsed,
      static_cast<double>(l.size()) / elapsed, pct(0.5), pct(0.99), tally.failures);
  return tally.failures == 0 ? 0 : 1;
}

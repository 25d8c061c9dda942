// Anweddol classic protocol: complete connections (key exchange, one STAT
// request, its response) per second against an in-process server on
// loopback with a persistent RSA-4096 key. Clients reuse one pre-generated
// key pair, as an Anweddol client configured to reuse its keys does.
// Usage: anweddol_classic_bench [--seconds S] [--threads T] [--client-bits B] [--workers W]
#include <algorithm>
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/anweddol_classic_channel.h"
#include "api/anweddol_classic_server.h"
#include "support/anweddol_classic_client.h"
#include "unit/test_files.h"

using namespace ephemera;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 10;
  int threads = 2;
  unsigned client_bits = 4096;
  std::size_t workers = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--seconds") {
      seconds = std::atoi(argv[i + 1]);
    } else if (flag == "--threads") {
      threads = std::atoi(argv[i + 1]);
    } else if (flag == "--client-bits") {
      client_bits = static_cast<unsigned>(std::atoi(argv[i + 1]));
    } else if (flag == "--workers") {
      workers = static_cast<std::size_t>(std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }

  test::TempDir dir;
  auto key_start = Clock::now();
  anweddol::RsaKey::Generate(4096).SavePrivate(dir.path() / "server.pem");
  auto client_key = test::AnweddolClientKey::GenerateRsa(client_bits);
  std::printf("keys: server RSA-4096, client RSA-%u (generated in %.0f ms, not counted)\n",
              client_bits, Ms(Clock::now() - key_start));

  AnweddolClassicOptions options;
  options.listen = {boost::asio::ip::make_address("127.0.0.1"), 0};
  options.key_file = dir.path() / "server.pem";
  options.workers = workers;
  auto started = Clock::now();
  AnweddolClassicServer server(options, [&](std::string_view, const boost::asio::ip::address&) {
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count();
    return nlohmann::json{{"success", true},
                          {"message", "OK"},
                          {"data", {{"version", "bench"}, {"uptime", uptime}, {"available", 1}}}};
  });

  const nlohmann::json stat = {{"verb", "STAT"}, {"parameters", nlohmann::json::object()}};
  std::atomic<bool> stop{false};
  std::atomic<long> failures{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::vector<std::thread> pool;
  auto begin = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::vector<double> mine;
      test::AnweddolClientOptions client{.key = client_key};
      while (!stop.load()) {
        auto t0 = Clock::now();
        try {
          auto response = test::AnweddolClassicRequest("127.0.0.1", server.port(), stat, client);
          if (response.value("success", false)) {
            mine.push_back(Ms(Clock::now() - t0));
          } else {
            ++failures;
          }
        } catch (const std::exception& e) {
          ++failures;
        }
      }
      std::lock_guard lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();

  std::printf("threads %d, server workers %zu, %.1f s: %zu complete connections, %ld failed\n",
              threads, workers, elapsed, latencies.size(), failures.load());
  std::printf("handshakes/s: %.1f\n", static_cast<double>(latencies.size()) / elapsed);
  std::printf("latency ms: median %.1f, p99 %.1f, max %.1f\n", Percentile(latencies, 0.5),
              Percentile(latencies, 0.99), Percentile(latencies, 1.0));
  return failures.load() == 0 ? 0 : 1;
}

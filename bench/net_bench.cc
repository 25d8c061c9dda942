// Sandbox network figures, in a private network namespace:
//  - setup + teardown of one sandbox network (TAP, dnsmasq, nft, forward),
//    median and max of N;
//  - port-forwarder throughput over loopback against a direct connection to
//    the same sink, measured in the same run, as a ratio;
//  - with --designs, the same ratio for two other forwarder designs, a
//    thread per direction with blocking splice and one with read/write
//    copies, to show where the bound lies.
// Usage: net_bench [--runs N] [--megabytes M] [--designs]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/unique_fd.h"
#include "integration/netns.h"
#include "net/network_manager.h"
#include "unit/loopback_server.h"
#include "unit/test_files.h"

using namespace ephemera;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Sends `megabytes` MiB to 127.0.0.1:port and returns MB/s.
double Throughput(std::uint16_t port, std::size_t megabytes) {
  UniqueFd fd = test::ConnectLoopback(port);
  if (!fd) return 0;
  std::vector<char> buf(1 << 20, 'x');
  auto start = Clock::now();
  for (std::size_t i = 0; i < megabytes; ++i) {
    std::size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::write(fd.get(), buf.data() + done, buf.size() - done);
      if (n <= 0) return 0;
      done += n;
    }
  }
  ::shutdown(fd.get(), SHUT_WR);
  char c;
  (void)!::read(fd.get(), &c, 1);  // wait for the sink to finish (EOF)
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return megabytes * 1.048576 / seconds;
}

// Forwards one accepted connection to the sink with a thread per
// direction, by blocking splice through a pipe or by read/write copies.
void ForwardDirection(int from, int to, bool use_splice) {
  if (use_splice) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) == 0) {
      UniqueFd read_end(fds[0]), write_end(fds[1]);
      ::fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
      for (;;) {
        ssize_t n = ::splice(from, nullptr, fds[1], nullptr, 1 << 20, SPLICE_F_MOVE);
        if (n <= 0) break;
        while (n > 0) {
          ssize_t m = ::splice(fds[0], nullptr, to, nullptr, n, SPLICE_F_MOVE);
          if (m <= 0) return;
          n -= m;
        }
      }
    }
  } else {
    std::vector<char> buf(1 << 18);
    ssize_t n;
    while ((n = ::read(from, buf.data(), buf.size())) > 0) {
      for (ssize_t done = 0; done < n;) {
        ssize_t m = ::write(to, buf.data() + done, n - done);
        if (m <= 0) return;
        done += m;
      }
    }
  }
  ::shutdown(to, SHUT_WR);
}

std::function<void(int)> ThreadPerDirection(std::uint16_t sink_port, bool use_splice) {
  return [sink_port, use_splice](int client) {
    UniqueFd upstream = test::ConnectLoopback(sink_port);
    if (!upstream) return;
    std::thread back(ForwardDirection, upstream.get(), client, use_splice);
    ForwardDirection(client, upstream.get(), use_splice);
    back.join();
  };
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  std::size_t megabytes = 2048;
  bool designs = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--designs")) designs = true;
    if (i + 1 >= argc) continue;
    if (!std::strcmp(argv[i], "--runs")) runs = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--megabytes")) megabytes = std::strtoul(argv[i + 1], nullptr, 10);
  }
  test::EnterPrivateNetworkNamespace();
  test::TempDir state;
  NetworkConfig config;
  config.forward_address = "127.0.0.1";
  NetworkManager manager(state.path(), config);

  std::vector<double> setup, teardown, total;
  for (int i = 0; i < runs; ++i) {
    SandboxId id = SandboxId::Generate();
    auto t0 = Clock::now();
    manager.Setup(id);
    auto t1 = Clock::now();
    manager.Teardown(id);
    auto t2 = Clock::now();
    setup.push_back(Ms(t1 - t0));
    teardown.push_back(Ms(t2 - t1));
    total.push_back(Ms(t2 - t0));
  }
  std::printf("network setup     median %7.2f ms  max %7.2f ms  (%d runs)\n", Median(setup),
              *std::max_element(setup.begin(), setup.end()), runs);
  std::printf("network teardown  median %7.2f ms  max %7.2f ms\n", Median(teardown),
              *std::max_element(teardown.begin(), teardown.end()));
  std::printf("setup + teardown  median %7.2f ms  max %7.2f ms\n", Median(total),
              *std::max_element(total.begin(), total.end()));

  test::LoopbackServer sink(test::LoopbackServer::Discard);
  ForwarderOptions options;
  options.listen_address = "127.0.0.1";
  options.ports = {30000, 30100};
  PortForwarder forwarder(options);
  SandboxId id = SandboxId::Generate();
  std::uint16_t port = forwarder.Open(id, Ipv4::Parse("127.0.0.1"), sink.port());
  std::vector<double> direct, forwarded;
  for (int i = 0; i < 3; ++i) {  // interleaved, so both see the same machine
    direct.push_back(Throughput(sink.port(), megabytes));
    forwarded.push_back(Throughput(port, megabytes));
  }
  double d = Median(direct), f = Median(forwarded);
  std::printf("direct loopback   median %8.0f MB/s (%zu MiB x 3)\n", d, megabytes);
  std::printf("through forwarder median %8.0f MB/s\n", f);
  std::printf("forwarder/direct  %.2f\n", f / d);
  if (!designs) return 0;

  for (bool use_splice : {true, false}) {
    test::LoopbackServer other(ThreadPerDirection(sink.port(), use_splice));
    std::vector<double> base, through;
    for (int i = 0; i < 3; ++i) {
      base.push_back(Throughput(sink.port(), megabytes));
      through.push_back(Throughput(other.port(), megabytes));
    }
    std::printf("thread per direction, %-15s median %8.0f MB/s, ratio %.2f\n",
                use_splice ? "blocking splice" : "read/write 256K", Median(through),
                Median(through) / Median(base));
  }
  return 0;
}

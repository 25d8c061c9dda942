// The network part against the real kernel, dnsmasq and nftables, inside a
// private network namespace (no guests: see sandbox_network_test for those;
// a container's namespace is played by one the test makes).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/subprocess.h"
#include "core/tracked_process.h"
#include "core/unique_fd.h"
#include "net/dhcp_server.h"
#include "net/egress_firewall.h"
#include "net/network_manager.h"
#include "net/sysctl.h"
#include "net/tap.h"
#include "net/veth.h"
#include "unit/loopback_server.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

NetworkConfig TestNetworkConfig() {
  NetworkConfig config;
  config.pool = Ipv4Cidr::Parse("172.16.0.0/16");
  config.forward_address = "127.0.0.1";
  config.forward_port_first = 10000;
  config.forward_port_last = 10100;
  return config;
}

std::string Output(const std::vector<std::string>& argv) { return RunChecked(argv).out; }

bool Listening(std::uint16_t port) {
  return Output({"ss", "-Htln", "sport", "= :" + std::to_string(port)}).find("LISTEN") !=
         std::string::npos;
}

class NetworkTest : public ::testing::Test {
 protected:
  void TearDown() override {
    manager_.reset();
    NetworkManager cleanup(state_.path(), TestNetworkConfig());
    cleanup.Reconcile();
    cleanup.TeardownAll();
  }
  test::TempDir state_;
  std::unique_ptr<NetworkManager> manager_ =
      std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
};

TEST_F(NetworkTest, SetupBuildsEveryPieceAndTeardownRemovesThem) {
  SandboxId id = SandboxId::Generate();
  SandboxNetwork n = manager_->Setup(id);
  EXPECT_EQ(n.tap, TapNameFor(id));
  EXPECT_TRUE(IsTunTapDevice(n.tap));
  EXPECT_THAT(Output({"ip", "-4", "-o", "addr", "show", "dev", n.tap}),
              HasSubstr(n.subnet.gateway().str() + "/30"));
  EXPECT_THAT(Output({"ip", "-o", "link", "show", "dev", n.tap}), HasSubstr(",UP"));
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv4/conf/" + n.tap + "/rp_filter"), "1\n");
  // dnsmasq: DHCP bound to this TAP only, no DNS port at all.
  std::string udp = Output({"ss", "-Hulpn"});
  EXPECT_THAT(udp, HasSubstr("%" + n.tap + ":67"));
  EXPECT_THAT(udp, Not(HasSubstr(":53 ")));
  EXPECT_THAT(Output({"ss", "-Htlpn"}), Not(HasSubstr("dnsmasq")));
  // nftables: the sandbox's elements are in the table.
  std::string table = Output({"nft", "list", "table", "inet", "ephemera"});
  EXPECT_THAT(table, HasSubstr("\"" + n.tap + "\" . " + n.subnet.guest().str()));
  // The forward listens on loopback within the range.
  EXPECT_GE(n.host_port, 10000);
  EXPECT_LE(n.host_port, 10100);
  EXPECT_TRUE(Listening(n.host_port));

  manager_->Teardown(id);
  manager_->Teardown(id);  // idempotent
  EXPECT_FALSE(InterfaceExists(n.tap));
  EXPECT_THAT(Output({"ss", "-Hulpn"}), Not(HasSubstr("dnsmasq")));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr(n.tap)));
  EXPECT_FALSE(Listening(n.host_port));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
}

TEST_F(NetworkTest, TwoSandboxesGetDistinctSubnetsTapsAndPorts) {
  SandboxNetwork a = manager_->Setup(SandboxId::Generate());
  SandboxNetwork b = manager_->Setup(SandboxId::Generate());
  EXPECT_NE(a.subnet, b.subnet);
  EXPECT_NE(a.tap, b.tap);
  EXPECT_NE(a.host_port, b.host_port);
  EXPECT_NE(a.mac, b.mac);
  manager_->Teardown(a.id);
  // b is untouched by a's teardown.
  EXPECT_TRUE(IsTunTapDevice(b.tap));
  EXPECT_TRUE(Listening(b.host_port));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(b.tap));
}

TEST_F(NetworkTest, DerivedSubnetIsStableAndCollisionsFailCleanly) {
  SandboxNetwork a = manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-7", "vm-a"});
  EXPECT_EQ(a.tap, TapNameForRun("run-7", "vm-a"));
  EXPECT_TRUE(IsTunTapDevice(a.tap));
  manager_->Teardown(a.id);
  EXPECT_FALSE(InterfaceExists(a.tap));
  SandboxNetwork again = manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-7", "vm-a"});
  EXPECT_EQ(again.subnet, a.subnet);
  EXPECT_EQ(again.tap, a.tap);
  SandboxId loser = SandboxId::Generate();
  try {
    manager_->Setup(loser, DerivedSubnet{"run-7", "vm-a"});
    ADD_FAILURE() << "two networks share run-7/vm-a's subnet";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr(again.id.str()));  // names the holder
  }
  EXPECT_TRUE(IsTunTapDevice(again.tap));  // the holder's TAP is untouched
  EXPECT_FALSE(fs::exists(state_.path() / "net" / loser.str()));

  // After a crash the derived TAP is restored, not taken for a stray, and
  // a teardown from the record alone (a fresh manager) removes it.
  manager_.reset();
  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  NetworkReconcileReport report = manager_->Reconcile();
  EXPECT_THAT(report.removed, ::testing::Not(::testing::Contains("TAP " + again.tap)));
  EXPECT_TRUE(IsTunTapDevice(again.tap));
  manager_.reset();
  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  manager_->Teardown(again.id);
  EXPECT_FALSE(InterfaceExists(again.tap));
}

TEST_F(NetworkTest, TapNameClashIsRefusedAndNothingIsLeft) {
  SandboxId id = SandboxId::Generate();
  CreateTap(TapNameFor(id), Ipv4::Parse("10.200.0.1"));  // someone else's interface
  try {
    manager_->Setup(id);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr("clash"));
  }
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
  EXPECT_TRUE(IsTunTapDevice(TapNameFor(id)));  // the other owner's, untouched
  DeleteTap(TapNameFor(id));
}

TEST_F(NetworkTest, MissingDnsmasqIsNamed) {
  NetworkConfig config = TestNetworkConfig();
  config.dnsmasq_binary = "dnsmasq-not-installed";
  try {
    NetworkManager broken(state_.path(), config);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), HasSubstr("dnsmasq-not-installed"));
    EXPECT_THAT(e.what(), HasSubstr("network.dnsmasq_binary"));
  }
}

TEST_F(NetworkTest, ReconcileAfterACrashRestoresRecordedAndRemovesStray) {
  SandboxNetwork n = manager_->Setup(SandboxId::Generate());
  // The daemon dies: its forwarder goes with it; dnsmasq is killed too.
  manager_.reset();
  EXPECT_FALSE(Listening(n.host_port));
  auto dnsmasq = TrackedProcess::Find(state_.path() / "net" / n.id.str() / "dnsmasq.pid",
                                      state_.path() / "net" / n.id.str());
  ASSERT_TRUE(dnsmasq);
  dnsmasq->Kill();
  ASSERT_TRUE(dnsmasq->WaitExit(std::chrono::seconds(5)));
  // A TAP that no record explains, and a half-written record.
  CreateTap("ephdeadbeef", Ipv4::Parse("10.201.0.1"));
  SandboxId torn = SandboxId::Generate();
  fs::create_directories(state_.path() / "net" / torn.str());
  test::WriteBytes(state_.path() / "net" / torn.str() / "network.json", "{\"id\":");

  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  NetworkReconcileReport report = manager_->Reconcile();
  EXPECT_THAT(report.restored, ::testing::Contains("dnsmasq for " + n.tap));
  EXPECT_THAT(report.removed, ::testing::Contains("TAP ephdeadbeef"));
  EXPECT_FALSE(InterfaceExists("ephdeadbeef"));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / torn.str()));
  ASSERT_TRUE(manager_->Find(n.id));
  EXPECT_EQ(manager_->Find(n.id)->host_port, n.host_port);  // same port again
  EXPECT_TRUE(Listening(n.host_port));
  EXPECT_TRUE(IsTunTapDevice(n.tap));
  EXPECT_THAT(Output({"ss", "-Hulpn"}), HasSubstr("%" + n.tap + ":67"));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(n.tap));
}

// A DNS query for `name`'s A records to `server`:53 over UDP: the answer's
// rcode and addresses (RFC 1035 wire format, names compressed or not).
struct DnsAnswer {
  int rcode = -1;
  std::vector<std::string> addresses;
};

DnsAnswer QueryA(const std::string& server, const std::string& name) {
  std::string query("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  for (std::size_t start = 0; start <= name.size();) {
    std::size_t end = std::min(name.find('.', start), name.size());
    query += static_cast<char>(end - start);
    query += name.substr(start, end - start);
    start = end + 1;
  }
  query += std::string("\x00\x00\x01\x00\x01", 5);
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(53);
  to.sin_addr.s_addr = htonl(Ipv4::Parse(server).value);
  timeval timeout{3, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::sendto(fd.get(), query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&to),
               sizeof to) < 0) {
    return {};
  }
  unsigned char reply[512];
  const ssize_t n = ::recv(fd.get(), reply, sizeof reply, 0);
  DnsAnswer answer;
  if (n < 12) return answer;
  answer.rcode = reply[3] & 0x0f;
  const int count = reply[6] << 8 | reply[7];
  std::size_t at = query.size();  // the question, echoed
  auto skip_name = [&] {
    while (at < static_cast<std::size_t>(n) && reply[at] != 0) {
      if ((reply[at] & 0xc0) == 0xc0) {
        at += 1;
        break;
      }
      at += reply[at] + 1;
    }
    at += 1;
  };
  for (int i = 0; i < count && at + 10 < static_cast<std::size_t>(n); ++i) {
    skip_name();
    const int type = reply[at] << 8 | reply[at + 1];
    const int length = reply[at + 8] << 8 | reply[at + 9];
    at += 10;
    if (type == 1 && length == 4 && at + 4 <= static_cast<std::size_t>(n)) {
      answer.addresses.push_back(
          fmt::format("{}.{}.{}.{}", reply[at], reply[at + 1], reply[at + 2], reply[at + 3]));
    }
    at += length;
  }
  return answer;
}

TEST_F(NetworkTest, AnAllowListsDnsServesItsDomainsAloneAndFillsItsSetForGood) {
  // The upstream resolver: a dnsmasq on 198.51.100.1 that knows two names.
  RunChecked({"ip", "link", "add", "upst0", "type", "veth", "peer", "name", "upst1"});
  RunChecked({"ip", "addr", "add", "198.51.100.1/24", "dev", "upst0"});
  RunChecked({"ip", "link", "set", "upst0", "up"});
  RunChecked({"ip", "link", "set", "upst1", "up"});
  test::TempDir upstream;
  RunChecked({"dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--interface=upst0",
              "--bind-interfaces", "--except-interface=lo", "--address=/example.test/203.0.113.10",
              "--address=/other.test/203.0.113.11",
              "--pid-file=" + (upstream.path() / "pid").string()});
  struct Cleanup {
    fs::path pidfile;
    ~Cleanup() {
      if (auto p = TrackedProcess::Find(pidfile, pidfile.parent_path())) p->Stop(2s);
      RunProcess({"ip", "link", "del", "upst0"});
    }
  } cleanup{upstream.path() / "pid"};

  NetworkConfig config = TestNetworkConfig();
  config.dns_servers = {Ipv4::Parse("198.51.100.1")};
  manager_ = std::make_unique<NetworkManager>(state_.path(), config);
  SandboxNetwork allowed =
      manager_->Setup(SandboxId::Generate(), {}, LinkMode::kTap,
                      MakeEgressPolicy("allow", {"example.test", "192.0.2.0/24"}));
  SandboxNetwork closed =
      manager_->Setup(SandboxId::Generate(), {}, LinkMode::kTap, MakeEgressPolicy("none", {}));
  // DNS on the allow-list's gateway only.
  EXPECT_THAT(Output({"ss", "-Hulpn", "sport", "= :53"}),
              HasSubstr(allowed.subnet.gateway().str()));
  EXPECT_THAT(Output({"ss", "-Hulpn", "sport", "= :53"}),
              Not(HasSubstr(closed.subnet.gateway().str())));

  const std::string gateway = allowed.subnet.gateway().str();
  DnsAnswer yes = QueryA(gateway, "www.example.test");
  EXPECT_EQ(yes.rcode, 0);
  EXPECT_THAT(yes.addresses, ::testing::ElementsAre("203.0.113.10"));
  DnsAnswer no = QueryA(gateway, "other.test");
  EXPECT_EQ(no.rcode, 3);  // NXDOMAIN: never asked upstream
  EXPECT_TRUE(no.addresses.empty());

  const std::string set_name = EgressDnsSet(allowed.tap);
  auto learnt = [&] { return Output({"nft", "list", "set", "inet", "ephemera_egress", set_name}); };
  EXPECT_THAT(learnt(), HasSubstr("203.0.113.10"));
  EXPECT_THAT(learnt(), Not(HasSubstr("203.0.113.11")));
  std::string table = Output({"nft", "list", "table", "inet", "ephemera_egress"});
  EXPECT_THAT(table, HasSubstr("\"" + allowed.tap + "\" : jump allow_" + allowed.tap));
  EXPECT_THAT(table, HasSubstr("\"" + closed.tap + "\" : drop"));
  EXPECT_THAT(table, HasSubstr("192.0.2.0/24"));

  // Another sandbox coming and going, and a restart, keep what was learnt.
  manager_->Teardown(closed.id);
  manager_.reset();
  manager_ = std::make_unique<NetworkManager>(state_.path(), config);
  manager_->Reconcile();
  EXPECT_THAT(learnt(), HasSubstr("203.0.113.10"));
  table = Output({"nft", "list", "table", "inet", "ephemera_egress"});
  EXPECT_THAT(table, Not(HasSubstr(closed.tap)));
  ASSERT_TRUE(manager_->Find(allowed.id));
  EXPECT_EQ(manager_->Find(allowed.id)->egress.Text(), "allow 192.0.2.0/24 example.test");

  manager_->Teardown(allowed.id);
  table = Output({"nft", "list", "table", "inet", "ephemera_egress"});
  EXPECT_THAT(table, Not(HasSubstr(allowed.tap)));
  EXPECT_THAT(table, Not(HasSubstr("set ")));
  manager_->TeardownAll();
  EXPECT_FALSE(RunProcess({"nft", "list", "table", "inet", "ephemera_egress"}).ok());
}

TEST_F(NetworkTest, EgressThatTheLinkCannotEnforceIsRefusedBeforeAnythingIsMade) {
  try {
    manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth,
                    MakeEgressPolicy("allow", {"example.test"}));
    ADD_FAILURE() << "a veth took an allow-list with a domain";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("domain names"));
  }
  try {
    manager_->Setup(SandboxId::Generate(), {}, LinkMode::kShared, MakeEgressPolicy("none", {}));
    ADD_FAILURE() << "a shared bridge took egress none";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("shared bridge"));
  }
  EXPECT_TRUE(manager_->List().empty());
  EXPECT_TRUE(fs::is_empty(state_.path() / "net"));
}

TEST_F(NetworkTest, TeardownAllRemovesTheTable) {
  manager_->Setup(SandboxId::Generate());
  manager_->TeardownAll();
  EXPECT_TRUE(ListEphemeraTaps().empty());
  EXPECT_FALSE(RunProcess({"nft", "list", "table", "inet", "ephemera"}).ok());
}

// --- containers: a veth pair instead of a TAP ---

// Runs `f` on a thread of its own inside network namespace `netns_fd`; what
// it opens there (sockets) stays in that namespace.
template <typename F>
auto InNamespace(int netns_fd, F f) {
  std::optional<decltype(f())> result;
  std::exception_ptr error;
  std::thread([&] {
    try {
      if (::setns(netns_fd, CLONE_NEWNET) != 0) FailErrno("setns", errno);
      result.emplace(f());
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

// A network namespace standing in for a container's (crun makes the real
// one); it lives as long as this object.
class FakeContainer {
 public:
  FakeContainer() {
    int err = 0;
    std::thread([&] {
      if (::unshare(CLONE_NEWNET) == 0) {
        fd_.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
      }
      err = errno;
    }).join();
    if (!fd_) FailErrno("cannot make a network namespace", err);
  }
  int fd() const { return fd_.get(); }
  // `argv` run inside the namespace.
  ProcessResult Run(std::vector<std::string> argv) const {
    argv.insert(argv.begin(),
                {"nsenter", fmt::format("--net=/proc/{}/fd/{}", ::getpid(), fd_.get()), "--"});
    return RunProcess(argv);
  }
  template <typename F>
  auto In(F f) const {
    return InNamespace(fd_.get(), std::move(f));
  }

 private:
  UniqueFd fd_;
};

sockaddr_in SockAddr(Ipv4 address, std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(address.value);
  return sa;
}

UniqueFd Listen(Ipv4 address, std::uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa = SockAddr(address, port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(fd.get(), 8) != 0) {
    FailErrno(fmt::format("cannot listen on {}:{}", address.str(), port), errno);
  }
  return fd;
}

UniqueFd AcceptWithin(int listener, std::chrono::milliseconds timeout) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return UniqueFd();
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// True when a TCP connection to address:port is made within `timeout` (a
// dropped SYN is a timeout).
bool TcpConnects(Ipv4 address, std::uint16_t port, std::chrono::milliseconds timeout = 1s) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in sa = SockAddr(address, port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// True when `address` answers an ICMP echo within `timeout`. Sent from an
// unprivileged ping socket, which only net.ipv4.ping_group_range allows.
bool Pings(Ipv4 address, std::chrono::milliseconds timeout = 1s) {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_ICMP));
  if (!fd) FailErrno("cannot open a ping socket (net.ipv4.ping_group_range)", errno);
  icmphdr echo{};
  echo.type = ICMP_ECHO;
  echo.un.echo.sequence = htons(1);
  sockaddr_in sa = SockAddr(address, 0);
  if (::sendto(fd.get(), &echo, sizeof echo, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    return false;
  }
  pollfd p{fd.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  icmphdr reply{};
  return ::recv(fd.get(), &reply, sizeof reply, 0) == static_cast<ssize_t>(sizeof reply) &&
         reply.type == ICMP_ECHOREPLY;
}

// True when a client of the forwarded `host_port` reaches a listener
// (standing in for sshd) and reads what it says.
bool ForwardReaches(std::uint16_t host_port, int listener) {
  UniqueFd client = test::ConnectLoopback(host_port);
  if (!client) return false;
  UniqueFd served = AcceptWithin(listener, 5s);
  if (!served) return false;
  const std::string banner = "SSH-2.0-fake\r\n";
  if (::write(served.get(), banner.data(), banner.size()) != static_cast<ssize_t>(banner.size())) {
    return false;
  }
  pollfd p{client.get(), POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return false;
  char buf[64];
  ssize_t n = ::read(client.get(), buf, sizeof buf);
  return n > 0 && std::string(buf, n) == banner;
}

std::string ReadLink(const char* path) { return fs::read_symlink(path).string(); }

// The kernel removes a dead namespace's devices asynchronously.
void WaitGone(const std::string& name) {
  for (int i = 0; i < 5000 && InterfaceExists(name); ++i) std::this_thread::sleep_for(1ms);
}

TEST_F(NetworkTest, VethSandboxIsAddressedFirewalledForwardedAndTornDown) {
  SandboxId id = SandboxId::Generate();
  SandboxNetwork n = manager_->Setup(id, {}, LinkMode::kVeth);
  const Ipv4 gateway = n.subnet.gateway(), guest = n.subnet.guest();
  EXPECT_EQ(n.mode, LinkMode::kVeth);
  EXPECT_EQ(n.tap, TapNameFor(id));  // so the rules, which match names, apply unchanged
  EXPECT_EQ(n.peer, VethPeerNameFor(n.tap));
  // No device yet: the container driver makes the pair once the
  // container's namespace exists.
  EXPECT_FALSE(InterfaceExists(n.tap));
  EXPECT_FALSE(InterfaceExists(n.peer));
  // No DHCP server: the container driver sets the address.
  EXPECT_THAT(Output({"ss", "-Hulpn"}), Not(HasSubstr("dnsmasq")));
  std::string record = ReadFile(state_.path() / "net" / id.str() / "network.json");
  EXPECT_THAT(record, HasSubstr("\"mode\": \"veth\""));
  EXPECT_THAT(record, HasSubstr("\"tap\": \"" + n.tap + "\""));
  EXPECT_THAT(record, HasSubstr("\"peer\": \"" + n.peer + "\""));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}),
              HasSubstr("\"" + n.tap + "\" . " + guest.str()));
  EXPECT_TRUE(Listening(n.host_port));

  FakeContainer container;
  const std::string host_ping_range = GetSysctl("net.ipv4.ping_group_range");
  const std::string home_ns = ReadLink("/proc/thread-self/ns/net");
  CreateContainerLink(n.tap, container.fd(), "eth0", n.mac, guest, gateway);
  // The caller's thread is back in its own namespace.
  EXPECT_EQ(ReadLink("/proc/thread-self/ns/net"), home_ns);
  // The host end, as a TAP would be.
  EXPECT_TRUE(IsVethDevice(n.tap));
  EXPECT_THAT(Output({"ip", "-4", "-o", "addr", "show", "dev", n.tap}),
              HasSubstr(gateway.str() + "/30"));
  EXPECT_THAT(Output({"ip", "-o", "link", "show", "dev", n.tap}), HasSubstr(",UP"));
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv4/conf/" + n.tap + "/rp_filter"), "1\n");
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv6/conf/" + n.tap + "/disable_ipv6"), "1\n");
  // The peer was made inside, never here.
  EXPECT_FALSE(InterfaceExists("eth0"));
  EXPECT_FALSE(InterfaceExists(n.peer));
  EXPECT_THAT(container.Run({"ip", "-4", "-o", "addr", "show", "dev", "eth0"}).out,
              HasSubstr(guest.str() + "/30"));
  std::string eth0 = container.Run({"ip", "-o", "link", "show", "dev", "eth0"}).out;
  EXPECT_THAT(eth0, HasSubstr(",UP"));
  EXPECT_THAT(eth0, HasSubstr("state UP"));
  EXPECT_THAT(eth0, HasSubstr(n.mac));
  EXPECT_THAT(container.Run({"ip", "-o", "link", "show", "dev", "lo"}).out, HasSubstr(",UP"));
  EXPECT_THAT(container.Run({"ip", "-4", "route"}).out,
              HasSubstr("default via " + gateway.str() + " dev eth0"));
  // Set in the container's namespace, not the host's.
  EXPECT_EQ(container.Run({"cat", "/proc/sys/net/ipv4/ping_group_range"}).out, "0\t2147483647\n");
  EXPECT_EQ(GetSysctl("net.ipv4.ping_group_range"), host_ping_range);

  // The firewall lets a container do what it lets a VM do: ping its
  // gateway (DHCP needs no exception here)...
  EXPECT_TRUE(container.In([&] { return Pings(gateway); }));
  // ...and nothing else on the host: a TCP service on the gateway's
  // address, open to the host itself, is closed to the container.
  UniqueFd host_service = Listen(gateway, 2222);
  EXPECT_TRUE(TcpConnects(gateway, 2222));
  EXPECT_FALSE(container.In([&] { return TcpConnects(gateway, 2222); }));
  EXPECT_FALSE(container.In([&] { return TcpConnects(gateway, n.host_port); }));
  // Clients reach the container's sshd (guest:22) through the forwarded port.
  UniqueFd sshd = container.In([&] { return Listen(guest, 22); });
  EXPECT_TRUE(ForwardReaches(n.host_port, sshd.get()));

  // The container's namespace still alive: Teardown deletes the pair.
  manager_->Teardown(id);
  EXPECT_FALSE(InterfaceExists(n.tap));
  // The peer went with the host end, from inside the container's namespace.
  EXPECT_FALSE(container.Run({"ip", "link", "show", "dev", "eth0"}).ok());
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr(n.tap)));
  EXPECT_FALSE(Listening(n.host_port));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
}

TEST_F(NetworkTest, VethIsGoneWithTheContainerAndTeardownFindsNothingToDelete) {
  SandboxNetwork n = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  auto container = std::make_unique<FakeContainer>();
  CreateContainerLink(n.tap, container->fd(), "eth0", n.mac, n.subnet.guest(), n.subnet.gateway());
  ASSERT_TRUE(IsVethDevice(n.tap));
  container.reset();  // the container dies: the kernel removes the pair
  WaitGone(n.tap);
  EXPECT_FALSE(InterfaceExists(n.tap));
  manager_->Teardown(n.id);
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr(n.tap)));
  EXPECT_FALSE(Listening(n.host_port));
  EXPECT_FALSE(manager_->Find(n.id));
}

TEST_F(NetworkTest, TwoVethSandboxesCannotReachEachOther) {
  // Routing on, so that the firewall, not the kernel's default, isolates.
  const std::string forwarding = SetSysctl("net.ipv4.ip_forward", "1");
  SandboxNetwork a = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  SandboxNetwork b = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  EXPECT_NE(a.subnet, b.subnet);
  EXPECT_NE(a.peer, b.peer);
  FakeContainer ca, cb;
  CreateContainerLink(a.tap, ca.fd(), "eth0", a.mac, a.subnet.guest(), a.subnet.gateway());
  CreateContainerLink(b.tap, cb.fd(), "eth0", b.mac, b.subnet.guest(), b.subnet.gateway());
  UniqueFd sshd_a = ca.In([&] { return Listen(a.subnet.guest(), 22); });
  UniqueFd sshd_b = cb.In([&] { return Listen(b.subnet.guest(), 22); });

  for (auto [from, to] : {std::pair{&ca, &b}, std::pair{&cb, &a}}) {
    SCOPED_TRACE(to->tap);
    EXPECT_FALSE(from->In([&] { return Pings(to->subnet.guest()); }));
    EXPECT_FALSE(from->In([&] { return TcpConnects(to->subnet.guest(), 22); }));
    EXPECT_FALSE(from->In([&] { return Pings(to->subnet.gateway()); }));
  }
  EXPECT_TRUE(ca.In([&] { return Pings(a.subnet.gateway()); }));
  EXPECT_TRUE(cb.In([&] { return Pings(b.subnet.gateway()); }));
  EXPECT_TRUE(ForwardReaches(a.host_port, sshd_a.get()));
  EXPECT_TRUE(ForwardReaches(b.host_port, sshd_b.get()));

  // The control: without the table, a does reach b (the test isolates
  // through the rules, not by accident).
  RunChecked({"nft", "delete", "table", "inet", "ephemera"});
  EXPECT_TRUE(ca.In([&] { return TcpConnects(b.subnet.guest(), 22); }));
  SetSysctl("net.ipv4.ip_forward", forwarding);
}

TEST_F(NetworkTest, DerivedVethNamesAndSubnetFollowTheRun) {
  SandboxNetwork n =
      manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-9", "ctr"}, LinkMode::kVeth);
  EXPECT_EQ(n.tap, TapNameForRun("run-9", "ctr"));
  EXPECT_EQ(n.peer, "epc" + n.tap.substr(3));
  FakeContainer container;
  CreateContainerLink(n.tap, container.fd(), "eth0", n.mac, n.subnet.guest(), n.subnet.gateway());
  EXPECT_TRUE(IsVethDevice(n.tap));
  manager_->Teardown(n.id);
  EXPECT_FALSE(InterfaceExists(n.tap));
  EXPECT_FALSE(container.Run({"ip", "link", "show", "dev", "eth0"}).ok());
  SandboxNetwork again =
      manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-9", "ctr"}, LinkMode::kVeth);
  EXPECT_EQ(again.subnet, n.subnet);
  EXPECT_EQ(again.tap, n.tap);
  EXPECT_EQ(again.peer, n.peer);
}

TEST_F(NetworkTest, VethNameClashIsRefusedAndTheOtherInterfaceKept) {
  SandboxId id = SandboxId::Generate();
  const std::string host = TapNameFor(id);
  RunChecked({"ip", "link", "add", host, "type", "bridge"});  // someone else's
  try {
    manager_->Setup(id, {}, LinkMode::kVeth);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr("clash"));
    EXPECT_THAT(e.what(), HasSubstr(host));
  }
  EXPECT_TRUE(InterfaceExists(host));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
  RunChecked({"ip", "link", "del", host});
}

TEST_F(NetworkTest, CreateContainerLinkNamesTheFailedStepAndLeavesNothing) {
  SandboxNetwork n = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  const Ipv4 gateway = n.subnet.gateway(), guest = n.subnet.guest();
  const std::string home_ns = ReadLink("/proc/thread-self/ns/net");
  FakeContainer container;
  auto code_of = [&](const std::string& host, int fd, const std::string& inside,
                     const std::string& mac, Ipv4 via, const std::string& says) {
    try {
      CreateContainerLink(host, fd, inside, mac, guest, via);
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(says));
      return std::optional<ErrorCode>(e.code());
    }
    ADD_FAILURE() << "no error";
    return std::optional<ErrorCode>();
  };
  auto nothing_left = [&](const std::string& inside) {
    EXPECT_FALSE(InterfaceExists(n.tap));
    EXPECT_FALSE(container.Run({"ip", "link", "show", "dev", inside}).ok()) << inside;
  };
  EXPECT_EQ(code_of(n.tap, container.fd(), "a-name-far-too-long", n.mac, gateway, "interface name"),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(n.tap, container.fd(), "eth0", "52:54:00:zz", gateway, "MAC"),
            ErrorCode::kInvalidArgument);
  nothing_left("eth0");
  UniqueFd not_a_namespace(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(code_of(n.tap, not_a_namespace.get(), "eth0", n.mac, gateway, "namespace"),
            ErrorCode::kInvalidArgument);
  nothing_left("eth0");
  // The host end's name is taken here (someone else's): refused, kept.
  RunChecked({"ip", "link", "add", n.tap, "type", "bridge"});
  EXPECT_EQ(code_of(n.tap, container.fd(), "eth0", n.mac, gateway, n.tap),
            ErrorCode::kAlreadyExists);
  EXPECT_TRUE(InterfaceExists(n.tap));
  EXPECT_FALSE(IsVethDevice(n.tap));
  RunChecked({"ip", "link", "del", n.tap});
  // The name is taken inside: nothing is made.
  ASSERT_TRUE(container.Run({"ip", "link", "add", "eth0", "type", "bridge"}).ok());
  EXPECT_EQ(code_of(n.tap, container.fd(), "eth0", n.mac, gateway, "eth0"),
            ErrorCode::kAlreadyExists);
  EXPECT_FALSE(InterfaceExists(n.tap));
  EXPECT_THAT(container.Run({"ip", "-d", "link", "show", "dev", "eth0"}).out, HasSubstr("bridge"));
  // A step after the pair is made fails (a gateway outside the /30 is
  // unreachable): the pair is deleted, both ends.
  EXPECT_EQ(
      code_of(n.tap, container.fd(), "eth1", n.mac, Ipv4::Parse("10.255.255.1"), "default route"),
      ErrorCode::kInternal);
  nothing_left("eth1");
  EXPECT_EQ(ReadLink("/proc/thread-self/ns/net"), home_ns);  // back after the failure too
  // ...and the link can be made again.
  CreateContainerLink(n.tap, container.fd(), "eth1", n.mac, guest, gateway);
  EXPECT_TRUE(container.In([&] { return Pings(gateway); }));
}

TEST_F(NetworkTest, ReconcileKeepsLiveVethsReportsAbsentOnesAndRemovesStrays) {
  SandboxNetwork live = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  SandboxNetwork lost = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  // No link yet: the daemon died before the driver made it.
  SandboxNetwork waiting = manager_->Setup(SandboxId::Generate(), {}, LinkMode::kVeth);
  FakeContainer live_ns;
  auto lost_ns = std::make_unique<FakeContainer>();
  CreateContainerLink(live.tap, live_ns.fd(), "eth0", live.mac, live.subnet.guest(),
                      live.subnet.gateway());
  CreateContainerLink(lost.tap, lost_ns->fd(), "eth0", lost.mac, lost.subnet.guest(),
                      lost.subnet.gateway());
  manager_.reset();
  // A container goes while the daemon is down: its namespace, and the pair, with it.
  lost_ns.reset();
  WaitGone(lost.tap);
  ASSERT_FALSE(InterfaceExists(lost.tap));
  // Pairs of ours that no record names, and one not named as ours.
  RunChecked({"ip", "link", "add", "ephdeadbeef", "type", "veth", "peer", "name", "epcdeadbeef"});
  RunChecked({"ip", "link", "add", "ephr0123456789", "type", "veth", "peer", "name", "x-other"});
  RunChecked({"ip", "link", "add", "ephlan7", "type", "veth", "peer", "name", "ephlan8"});

  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  NetworkReconcileReport report = manager_->Reconcile();
  // Kept and reported, for the engine to resolve; nothing is made for them.
  EXPECT_THAT(report.lost, ::testing::UnorderedElementsAre(lost.id, waiting.id));
  for (const SandboxNetwork* n : {&lost, &waiting}) {
    EXPECT_FALSE(InterfaceExists(n->tap));
    EXPECT_FALSE(InterfaceExists(n->peer));
    ASSERT_TRUE(manager_->Find(n->id));
    EXPECT_TRUE(Listening(n->host_port));
  }
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(waiting.tap));
  EXPECT_THAT(report.removed, Contains("veth ephdeadbeef"));
  EXPECT_THAT(report.removed, Contains("veth ephr0123456789"));
  for (const char* gone : {"ephdeadbeef", "epcdeadbeef", "ephr0123456789", "x-other"}) {
    EXPECT_FALSE(InterfaceExists(gone)) << gone;
  }
  EXPECT_TRUE(IsVethDevice("ephlan7"));
  RunChecked({"ip", "link", "del", "ephlan7"});
  EXPECT_THAT(report.restored, ::testing::IsEmpty());  // nothing of a live one was missing
  EXPECT_TRUE(IsVethDevice(live.tap));
  ASSERT_TRUE(manager_->Find(live.id));
  EXPECT_EQ(manager_->Find(live.id)->host_port, live.host_port);
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(live.tap));
  UniqueFd sshd = live_ns.In([&] { return Listen(live.subnet.guest(), 22); });
  EXPECT_TRUE(ForwardReaches(live.host_port, sshd.get()));

  // The driver makes the waiting one's link after all: the kept rules apply.
  FakeContainer waiting_ns;
  CreateContainerLink(waiting.tap, waiting_ns.fd(), "eth0", waiting.mac, waiting.subnet.guest(),
                      waiting.subnet.gateway());
  EXPECT_TRUE(waiting_ns.In([&] { return Pings(waiting.subnet.gateway()); }));
  UniqueFd waiting_sshd = waiting_ns.In([&] { return Listen(waiting.subnet.guest(), 22); });
  EXPECT_TRUE(ForwardReaches(waiting.host_port, waiting_sshd.get()));

  manager_->Teardown(lost.id);  // what the engine does: gone is fine
  EXPECT_FALSE(fs::exists(state_.path() / "net" / lost.id.str()));
  manager_->Teardown(live.id);
  EXPECT_FALSE(live_ns.Run({"ip", "link", "show", "dev", "eth0"}).ok());
}

// Not a benchmark harness: prints what a container's create and destroy pay
// for the network. Teardown is timed three ways: the container's namespace
// alive (deleting a live pair), just closed (the kernel's asynchronous
// cleanup may not have removed the pair yet) and gone (nothing to delete).
}  // namespace
}  // namespace ephemera

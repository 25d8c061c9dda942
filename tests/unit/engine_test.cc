// The engine with fake drivers (VM, network, provisioner) over a real store
// and image catalog: rollback at every step, limits under concurrency, TTL,
// the reaper, tokens and reconcile.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <limits>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/sha256.h"
#include "engine/engine.h"
#include "guest/agent_provision.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class FakeVms : public VmDriver {
 public:
  std::string_view name() const override { return "fake"; }
  bool passes_secret_files() const override { return secrets; }
  bool supports_agent() const override { return agent; }
  bool supports_pause() const override { return true; }
  bool supports_snapshots() const override { return true; }
  void BuildSnapshot(const VmSpec& spec, const std::function<void(const VmInfo&)>&) override {
    std::lock_guard lock(mutex);
    template_spec = spec;
    snapshot_ready = true;
  }
  std::optional<VmInfo> StartFromSnapshot(const VmSpec& spec) override {
    std::lock_guard lock(mutex);
    if (!snapshot_ready) return std::nullopt;
    if (fail_restore) {
      snapshot_ready = false;  // dropped, as the driver does
      Fail(ErrorCode::kFailedPrecondition, "fake: the saved state is cut short");
    }
    vms.insert_or_assign(spec.id, VmState::kRunning);
    last_spec = spec;
    VmInfo info{spec.id, VmState::kRunning, 1234, "/fake", "/fake/serial.log"};
    info.agent_socket = "/fake/agent.sock";
    return info;
  }
  std::optional<VmSpec> template_spec;
  bool snapshot_ready = false;
  bool fail_restore = false;
  void Pause(const SandboxId& id) override {
    std::lock_guard lock(mutex);
    if (fail_pause) Fail(ErrorCode::kNoSpace, "fake: No space left on device; it runs on");
    vms.insert_or_assign(id, VmState::kSaved);
  }
  VmInfo Resume(const SandboxId& id) override {
    std::lock_guard lock(mutex);
    if (fail_resume) Fail(ErrorCode::kFailedPrecondition, "fake: restore failed");
    vms.insert_or_assign(id, VmState::kRunning);
    VmInfo info{id, VmState::kRunning, 1234, "/fake", "/fake/serial.log"};
    info.agent_socket = "/fake/agent.sock";
    return info;
  }
  LinkMode link_mode() const override { return mode; }
  Ipv4 WaitForAddress(const SandboxId&, std::chrono::milliseconds) override {
    return Ipv4::Parse("192.168.123.5");  // kShared: what the bridge's DHCP gave
  }
  void OnOutOfMemory(OutOfMemoryListener listener) override { out_of_memory = std::move(listener); }
  VmInfo Start(const VmSpec& spec) override {
    std::lock_guard lock(mutex);
    if (fail_start) Fail(ErrorCode::kFailedPrecondition, "fake: QEMU refused");
    last_guest_files = spec.guest_files;
    last_spec = spec;
    vms.insert_or_assign(spec.id, VmState::kRunning);
    VmInfo info{spec.id, VmState::kRunning, 1234, "/fake", "/fake/serial.log"};
    if (spec.agent_channel) info.agent_socket = "/fake/agent.sock";
    return info;
  }
  VmInfo Inspect(const SandboxId& id) override {
    std::lock_guard lock(mutex);
    if (cannot_check) Fail(ErrorCode::kUnavailable, "fake: cannot check: Too many open files");
    auto it = vms.find(id);
    if (it == vms.end()) Fail(ErrorCode::kNotFound, "no VM");
    return VmInfo{id, it->second, 1234, "/fake", "/fake/serial.log"};
  }
  bool Shutdown(const SandboxId& id, std::chrono::milliseconds) override {
    std::lock_guard lock(mutex);
    vms.insert_or_assign(id, VmState::kShutoff);
    return true;
  }
  void Destroy(const SandboxId& id) override {
    std::lock_guard lock(mutex);
    vms.erase(id);
  }
  std::vector<SandboxId> List() override {
    std::lock_guard lock(mutex);
    std::vector<SandboxId> ids;
    for (const auto& [id, _] : vms) ids.push_back(id);
    return ids;
  }
  std::mutex mutex;
  std::map<SandboxId, VmState> vms;
  std::vector<GuestFile> last_guest_files;
  bool fail_start = false;
  bool cannot_check = false;
  bool secrets = false;
  bool agent = false;
  bool fail_pause = false;
  bool fail_resume = false;
  LinkMode mode = LinkMode::kTap;
  OutOfMemoryListener out_of_memory;
  std::optional<VmSpec> last_spec;
};

class FakeNetworks : public SandboxNetworks {
 public:
  std::uint16_t SetGuestAddress(const SandboxId&, Ipv4) override { return 10999; }
  SandboxNetwork Setup(const SandboxId& id, const std::optional<DerivedSubnet>& derive, LinkMode,
                       const EgressPolicy& egress = {}) override {
    std::lock_guard lock(mutex);
    last_derive = derive;
    last_egress = egress;
    if (fail_setup) Fail(ErrorCode::kResourceExhausted, "fake: address pool exhausted");
    SandboxNetwork n{id,
                     "eph" + id.ShortName(),
                     Subnet30{next, Ipv4{0xac100000 + next * 4}},
                     "52:54:00:00:00:01",
                     static_cast<std::uint16_t>(10000 + next),
                     22};
    ++next;
    live.insert_or_assign(id, n);
    return n;
  }
  void Teardown(const SandboxId& id) override {
    std::lock_guard lock(mutex);
    live.erase(id);
  }
  std::uint16_t ExposePort(const SandboxId& id, std::uint16_t guest_port,
                           std::size_t limit) override {
    std::lock_guard lock(mutex);
    SandboxNetwork& n = live.at(id);
    for (const ExposedPort& p : n.exposed) {
      if (p.guest_port == guest_port) Fail(ErrorCode::kAlreadyExists, "fake: exposed already");
    }
    if (n.exposed.size() >= limit) Fail(ErrorCode::kFailedPrecondition, "fake: limit");
    n.exposed.push_back({guest_port, static_cast<std::uint16_t>(20000 + guest_port)});
    return n.exposed.back().host_port;
  }
  void UnexposePort(const SandboxId& id, std::uint16_t guest_port) override {
    std::lock_guard lock(mutex);
    auto& ports = live.at(id).exposed;
    auto it = std::find_if(ports.begin(), ports.end(),
                           [&](const ExposedPort& p) { return p.guest_port == guest_port; });
    if (it == ports.end()) Fail(ErrorCode::kNotFound, "fake: not exposed");
    ports.erase(it);
  }
  std::optional<SandboxNetwork> Find(const SandboxId& id) const override {
    std::lock_guard lock(mutex);
    auto it = live.find(id);
    if (it == live.end()) return std::nullopt;
    return it->second;
  }
  std::vector<SandboxNetwork> List() const override {
    std::lock_guard lock(mutex);
    std::vector<SandboxNetwork> all;
    for (const auto& [_, n] : live) all.push_back(n);
    return all;
  }
  NetworkReconcileReport Reconcile() override { return {}; }
  NetworkActivity Activity(const SandboxId& id) const override {
    std::lock_guard lock(mutex);
    auto it = activity.find(id);
    return it == activity.end() ? NetworkActivity{} : it->second;
  }
  mutable std::mutex mutex;
  std::map<SandboxId, NetworkActivity> activity;  // what Activity answers
  std::map<SandboxId, SandboxNetwork> live;
  std::uint32_t next = 0;
  bool fail_setup = false;
  std::optional<DerivedSubnet> last_derive;
  EgressPolicy last_egress;
};

class FakeProvisioner : public Provisioner {
 public:
  ProvisionResult Run(const ProvisionRequest& request) override {
    int now = ++running;
    int seen = max_running.load();
    while (now > seen && !max_running.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(delay);
    --running;
    if (fail) Fail(ErrorCode::kFailedPrecondition, "fake: setup script failed (exit 1)");
    last_host = request.host;
    last_expected_host_key = request.expected_host_key;
    ProvisionResult r;
    r.credentials = GenerateClientCredentials();
    r.host_key_fingerprint = "SHA256:fake";
    r.host_key = "ssh-ed25519 AAAAfake";
    return r;
  }
  ProvisionResult RunAgent(const AgentProvisionRequest& request) override {
    ++agent_runs;
    if (!refused_agent_token.empty() && request.token == refused_agent_token) {
      Fail(ErrorCode::kTimeout, "fake: the guest agent did not answer in time");
    }
    last_agent_socket = request.socket;
    last_agent_token = request.token;
    last_new_token = request.new_token;
    last_agent_dns.clear();
    if (request.network) {
      for (const Ipv4& server : request.network->dns) last_agent_dns.push_back(server.str());
    }
    ProvisionRequest as_ssh;
    as_ssh.host = request.host;
    return Run(as_ssh);
  }
  void SyncClock(const std::filesystem::path& socket, const std::string& token) override {
    clock_syncs.push_back({socket, token});
  }
  std::vector<std::pair<std::filesystem::path, std::string>> clock_syncs;
  std::atomic<int> agent_runs{0};
  std::filesystem::path last_agent_socket;
  std::string last_agent_token;
  std::string last_new_token;
  std::vector<std::string> last_agent_dns;
  std::string refused_agent_token;
  std::atomic<int> running{0}, max_running{0};
  std::chrono::milliseconds delay{0};
  bool fail = false;
  std::string last_host;
  std::optional<std::string> last_expected_host_key;
};

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : store_(state_.path() / "state.db"), images_(images_dir_.path()) {
    test::MakeFakeKernelImage(images_dir_.path(), "default");
    options_.max_sandboxes = 3;
    options_.max_parallel_creates = 2;
    options_.reaper_interval = 20ms;
  }
  Engine& engine() {
    if (!engine_)
      engine_ = std::make_unique<Engine>(options_, store_, images_,
                                         EngineDrivers{{{"qemu", &vms_}}, "qemu", ""}, networks_,
                                         provisioner_);
    return *engine_;
  }
  // An image "agent" whose guest agent speaks `protocol`.
  void MakeAgentImage(int protocol) {
    const std::filesystem::path image = test::MakeFakeKernelImage(images_dir_.path(), "agent");
    test::WriteBytes(image / "manifest.json",
                     R"({"version":1,"format":"kernel","kernel":"vmlinux","initrd":"initrd.img",)"
                     R"("rootfs":"rootfs.ext4","agent":{"protocol":)" +
                         std::to_string(protocol) + R"(,"channel":"org.ephemera.agent.0"}})");
  }
  void WaitForSnapshotReady() {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (engine().Status().snapshots.at(0).state != "ready") {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline);
      std::this_thread::sleep_for(5ms);
    }
  }
  void ExpectNothingLeft() {
    EXPECT_TRUE(store_.List().empty());
    EXPECT_TRUE(vms_.vms.empty());
    EXPECT_TRUE(networks_.live.empty());
  }
  void ExpectCreateFails(const CreateRequest& request, ErrorCode code, const std::string& needle) {
    try {
      engine().Create(request);
      ADD_FAILURE() << "created";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
    ExpectNothingLeft();
  }

  test::TempDir state_;
  test::TempDir images_dir_;
  Store store_;
  ImageCatalog images_;
  FakeVms vms_;
  FakeNetworks networks_;
  FakeProvisioner provisioner_;
  EngineOptions options_;
  std::unique_ptr<Engine> engine_;
};

// Containers and VMs side by side: each sandbox goes to its kind's driver,
// and a container's network is a veth the driver makes inside.
class TwoDriverEngineTest : public EngineTest {
 protected:
  Engine& engine() {
    if (!engine_) {
      containers_.mode = LinkMode::kVeth;
      engine_ = std::make_unique<Engine>(
          options_, store_, images_,
          EngineDrivers{{{"qemu", &vms_}, {"container", &containers_}}, "qemu", "container"},
          networks_, provisioner_);
    }
    return *engine_;
  }
  FakeVms containers_;
};

TEST_F(TwoDriverEngineTest, EachKindGoesToItsDriver) {
  CreateRequest as_container;
  as_container.kind = SandboxKind::kContainer;
  CreateResult c = engine().Create(as_container);
  CreateResult v = engine().Create({});
  EXPECT_EQ(c.sandbox.driver, "container");
  EXPECT_EQ(c.sandbox.spec.kind, SandboxKind::kContainer);
  EXPECT_EQ(v.sandbox.driver, "qemu");
  EXPECT_EQ(containers_.vms.count(c.sandbox.id), 1u);
  EXPECT_EQ(vms_.vms.count(v.sandbox.id), 1u);
  // The container's NIC: the host end's name and its /30, for the driver
  // to make the pair with.
  ASSERT_TRUE(containers_.last_spec && containers_.last_spec->nic);
  EXPECT_EQ(containers_.last_spec->nic->tap, c.sandbox.tap);
  ASSERT_TRUE(containers_.last_spec->nic->subnet.has_value());
  EXPECT_EQ(containers_.last_spec->nic->subnet->guest().str(), c.sandbox.guest_ip);
  // Only a VM carries QEMU's overhead in the memory budget.
  EXPECT_LT(c.sandbox.overhead_mib, 8u);
  engine().Destroy(c.sandbox.id, std::nullopt);
  engine().Destroy(v.sandbox.id, std::nullopt);
  ExpectNothingLeft();
  EXPECT_TRUE(containers_.vms.empty());
}

TEST_F(TwoDriverEngineTest, AContainerTakesAddressesInItsAllowListButNoNames) {
  options_.outbound_nat = true;
  engine();  // the two-driver engine, which ExpectCreateFails then uses
  CreateRequest named{.kind = SandboxKind::kContainer,
                      .egress = MakeEgressPolicy("allow", {"example.test"})};
  ExpectCreateFails(named, ErrorCode::kFailedPrecondition, "domain names");
  CreateRequest addressed{.kind = SandboxKind::kContainer,
                          .egress = MakeEgressPolicy("allow", {"203.0.113.0/24"})};
  CreateResult c = engine().Create(addressed);
  EXPECT_EQ(networks_.last_egress.Text(), "allow 203.0.113.0/24");
  engine().Destroy(c.sandbox.id, std::nullopt);
  ExpectNothingLeft();
}

TEST_F(TwoDriverEngineTest, AnOutOfMemoryKillIsRecorded) {
  CreateRequest as_container;
  as_container.kind = SandboxKind::kContainer;
  CreateResult c = engine().Create(as_container);
  ASSERT_TRUE(containers_.out_of_memory);
  containers_.out_of_memory(c.sandbox.id, 2);
  bool recorded = false;
  for (const auto& e : store_.Events()) {
    recorded |= e.kind == "out_of_memory" && e.sandbox_id == c.sandbox.id.str() &&
                e.detail.find("2 process") != std::string::npos;
  }
  EXPECT_TRUE(recorded);
  engine().Destroy(c.sandbox.id, std::nullopt);
}

TEST_F(EngineTest, WithoutAContainerDriverContainersAreRefused) {
  CreateRequest as_container;
  as_container.kind = SandboxKind::kContainer;
  ExpectCreateFails(as_container, ErrorCode::kInvalidArgument, "no container sandboxes");
}

TEST_F(EngineTest, CreateReturnsCredentialsOnceAndStoresOnlyHashes) {
  CreateResult r = engine().Create({});
  EXPECT_EQ(r.sandbox.state, SandboxState::kReady);
  EXPECT_EQ(r.password.size(), 120u);
  EXPECT_EQ(r.token.size(), Engine::kTokenLength);
  EXPECT_EQ(r.sandbox.guest_ip, "172.16.0.2");
  EXPECT_EQ(provisioner_.last_host, "172.16.0.2");
  EXPECT_EQ(r.sandbox.host_key_fingerprint, "SHA256:fake");
  ASSERT_TRUE(r.sandbox.expires_at);
  EXPECT_NEAR(*r.sandbox.expires_at, NowUnix() + 3600, 5);
  Sandbox stored = *store_.Get(r.sandbox.id);
  EXPECT_EQ(stored.token_sha256, Sha256Hex(r.token));
  EXPECT_EQ(stored.username, r.sandbox.username);
  // The guest got a per-sandbox public key, no password.
  ASSERT_EQ(vms_.last_guest_files.size(), 1u);
  EXPECT_THAT(vms_.last_guest_files[0].content, ::testing::StartsWith("ssh-ed25519 "));
  EXPECT_FALSE(vms_.last_guest_files[0].secret);
  // This driver cannot hand over a secret: the guest makes its host key.
  EXPECT_FALSE(provisioner_.last_expected_host_key);
}

TEST_F(EngineTest, ADriverThatPassesSecretsGivesTheGuestItsHostKeyAndItIsExpected) {
  vms_.secrets = true;
  engine().Create({});
  ASSERT_EQ(vms_.last_guest_files.size(), 2u);
  const GuestFile& host_key = vms_.last_guest_files[1];
  EXPECT_EQ(host_key.name, "opt/ephemera/ssh_host_ed25519_key");
  EXPECT_TRUE(host_key.secret);
  EXPECT_THAT(host_key.content, ::testing::StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
  EXPECT_THAT(host_key.content, ::testing::EndsWith("-----END OPENSSH PRIVATE KEY-----\n"));
  // The provisioner is told the public half, and refuses any other key.
  ASSERT_TRUE(provisioner_.last_expected_host_key);
  EXPECT_THAT(*provisioner_.last_expected_host_key, ::testing::StartsWith("ssh-ed25519 AAAA"));
  // Each sandbox gets a key of its own.
  const std::string first = *provisioner_.last_expected_host_key;
  engine().Create({});
  EXPECT_NE(*provisioner_.last_expected_host_key, first);
}

TEST_F(EngineTest, AgentImagesStartFromATemplateMadeInTheBackgroundAndBootWhenItFails) {
  MakeAgentImage(2);
  options_.max_sandboxes = 5;
  options_.snapshots = true;
  options_.agent_key = std::string(32, 'k');
  vms_.secrets = true;
  vms_.agent = true;
  CreateRequest request;
  request.image = "agent";
  engine().StartPool();  // the background thread makes templates too
  EXPECT_EQ(engine().Create(request).phases.start, "boot");
  WaitForSnapshotReady();
  // The template: the agent's channel and a token of its own, nobody's.
  ASSERT_TRUE(vms_.template_spec);
  EXPECT_TRUE(vms_.template_spec->agent_channel);
  ASSERT_EQ(vms_.template_spec->guest_files.size(), 1u);
  const std::string template_token = vms_.template_spec->guest_files[0].content;
  EXPECT_EQ(vms_.template_spec->owner, kPoolOwner);

  CreateResult restored = engine().Create(request);
  EXPECT_EQ(restored.phases.start, "snapshot");
  // The daemon greets the clone with the template's token and hands it the
  // sandbox's own, the one its spec carries.
  EXPECT_EQ(provisioner_.last_agent_token, template_token);
  EXPECT_EQ(provisioner_.last_new_token, vms_.last_spec->guest_files.at(0).content);
  EXPECT_NE(provisioner_.last_new_token, template_token);
  EXPECT_EQ(engine().Status().snapshots.at(0).restores, 1u);

  // A restore that fails: the create boots instead, and the template is made again.
  vms_.fail_restore = true;
  CreateResult cold = engine().Create(request);
  EXPECT_EQ(cold.phases.start, "boot");
  EXPECT_TRUE(provisioner_.last_new_token.empty());
  EXPECT_EQ(engine().Status().snapshots.at(0).fallbacks, 1u);

  // A clone that restores but does not take its identity boots too.
  vms_.fail_restore = false;
  WaitForSnapshotReady();
  provisioner_.refused_agent_token = template_token;
  CreateResult rescued = engine().Create(request);
  EXPECT_EQ(rescued.phases.start, "boot");
  EXPECT_EQ(provisioner_.last_agent_token, vms_.last_spec->guest_files.at(0).content);
  EXPECT_EQ(engine().Status().snapshots.at(0).fallbacks, 2u);
  EXPECT_EQ(vms_.vms.size(), 4u);  // the first, restored, cold, rescued: no clone left behind
  engine().StopPool();
  for (const auto& r : {restored, cold, rescued}) engine().Destroy(r.sandbox.id, std::nullopt);
}

TEST_F(EngineTest, AnImageWithTheAgentIsProvisionedThroughItWithAFreshTokenPerSandbox) {
  MakeAgentImage(1);
  options_.max_sandboxes = 5;
  vms_.secrets = true;
  vms_.agent = true;
  CreateRequest request;
  request.image = "agent";
  engine().Create(request);
  EXPECT_EQ(provisioner_.agent_runs, 1);
  ASSERT_TRUE(vms_.last_spec);
  EXPECT_TRUE(vms_.last_spec->agent_channel);
  // Only the token goes in before boot, as a secret; the rest is in the
  // identity message.
  ASSERT_EQ(vms_.last_guest_files.size(), 1u);
  EXPECT_EQ(vms_.last_guest_files[0].name, "opt/ephemera/agent_token");
  EXPECT_TRUE(vms_.last_guest_files[0].secret);
  EXPECT_EQ(vms_.last_guest_files[0].content, provisioner_.last_agent_token);
  EXPECT_EQ(provisioner_.last_agent_token.size(), 64u);
  EXPECT_EQ(provisioner_.last_agent_socket, "/fake/agent.sock");
  const std::string first = provisioner_.last_agent_token;
  engine().Create(request);
  EXPECT_NE(provisioner_.last_agent_token, first);

  // Without the driver's channel, or an image without the agent: SSH.
  vms_.agent = false;
  engine().Create(request);
  EXPECT_EQ(provisioner_.agent_runs, 2);
  EXPECT_FALSE(vms_.last_spec->agent_channel);
  vms_.agent = true;
  engine().Create({});
  EXPECT_EQ(provisioner_.agent_runs, 2);
  EXPECT_FALSE(vms_.last_spec->agent_channel);
}

TEST_F(EngineTest, PauseStopsTheClockOfTheTtlAndResumeGivesItBack) {
  options_.max_paused = std::chrono::seconds(600);
  CreateRequest request;
  request.ttl_seconds = 1000;
  CreateResult r = engine().Create(request);
  const SandboxId id = r.sandbox.id;
  EXPECT_THROW(engine().Pause(id, std::string("not-its-token")), Error);
  Sandbox paused = engine().Pause(id, r.token);
  EXPECT_EQ(paused.state, SandboxState::kPaused);
  EXPECT_EQ(vms_.vms.at(id), VmState::kSaved);
  EXPECT_NEAR(static_cast<double>(paused.ttl_left_seconds), 1000.0, 2.0);
  // While paused, expires_at is the end of its time paused.
  EXPECT_NEAR(static_cast<double>(*paused.expires_at - NowUnix()), 600.0, 2.0);
  engine().ReapOnce();  // saved, not gone: the reaper leaves it
  EXPECT_EQ(store_.Get(id)->state, SandboxState::kPaused);
  EXPECT_THROW(engine().Pause(id, r.token), Error);  // already paused
  Sandbox resumed = engine().Resume(id, r.token);
  EXPECT_EQ(resumed.state, SandboxState::kReady);
  EXPECT_EQ(vms_.vms.at(id), VmState::kRunning);
  EXPECT_NEAR(static_cast<double>(*resumed.expires_at - NowUnix()), 1000.0, 2.0);
  EXPECT_FALSE(store_.Get(id)->paused_at);
  EXPECT_THROW(engine().Resume(id, r.token), Error);  // not paused
}

// Runs `f`, which must fail with `code`; returns the error's message.
template <typename F>
std::string ExpectCode(F f, ErrorCode code, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  return "";
}

TEST_F(EngineTest, TimeToLiveIsSetAnewLongerOrShorterWithinMaxTtl) {
  options_.max_ttl = std::chrono::seconds(5000);
  options_.default_ttl = std::chrono::seconds(700);
  CreateRequest request;
  request.ttl_seconds = 100;
  CreateResult r = engine().Create(request);
  const SandboxId id = r.sandbox.id;

  Sandbox longer = engine().SetTimeToLive(id, 4000, r.token);
  EXPECT_NEAR(static_cast<double>(*longer.expires_at - NowUnix()), 4000.0, 2.0);
  EXPECT_EQ(*store_.Get(id)->expires_at, *longer.expires_at);
  Sandbox shorter = engine().SetTimeToLive(id, 10, std::nullopt);  // an administrator
  EXPECT_NEAR(static_cast<double>(*shorter.expires_at - NowUnix()), 10.0, 2.0);
  Sandbox by_default = engine().SetTimeToLive(id, std::nullopt, r.token);
  EXPECT_NEAR(static_cast<double>(*by_default.expires_at - NowUnix()), 700.0, 2.0);

  // Out of range, another's token, an unknown sandbox: refused, nothing changed.
  for (std::int64_t bad : {0, -5, 5001}) {
    EXPECT_THAT(
        ExpectCode([&] { engine().SetTimeToLive(id, bad, r.token); }, ErrorCode::kInvalidArgument,
                   "ttl " + std::to_string(bad) + " was taken"),
        HasSubstr("out of range [1, 5000]"));
  }
  ExpectCode([&] { engine().SetTimeToLive(id, 50, std::string("not-its-token")); },
             ErrorCode::kPermissionDenied, "another token changed it");
  EXPECT_EQ(*store_.Get(id)->expires_at, *by_default.expires_at);
  ExpectCode([&] { engine().SetTimeToLive(SandboxId::Generate(), 50, std::nullopt); },
             ErrorCode::kNotFound, "an unknown sandbox took a time to live");

  // Shortened into the past of the reaper's next look: it is destroyed.
  engine().SetTimeToLive(id, 1, r.token);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  engine().ReapOnce();
  EXPECT_FALSE(store_.Get(id));
}

TEST_F(EngineTest, ExposedPortsAreCheckedLimitedAndListedAfterSsh) {
  options_.max_exposed_ports = 2;
  CreateResult r = engine().Create({});
  const SandboxId id = r.sandbox.id;
  ExposedPort web = engine().ExposePort(id, 8080, r.token);
  EXPECT_EQ(web.guest_port, 8080);
  EXPECT_EQ(web.host_port, 28080);
  auto expect_error = [&](std::uint16_t port, const std::optional<std::string>& token,
                          ErrorCode code) {
    ExpectCode([&] { engine().ExposePort(id, port, token); }, code,
               "port " + std::to_string(port) + " was exposed");
  };
  expect_error(0, r.token, ErrorCode::kInvalidArgument);
  expect_error(22, r.token, ErrorCode::kAlreadyExists);  // SSH's, forwarded from the start
  expect_error(8080, r.token, ErrorCode::kAlreadyExists);
  expect_error(9090, std::string("not-its-token"), ErrorCode::kPermissionDenied);
  engine().ExposePort(id, 9090, std::nullopt);
  expect_error(9191, r.token, ErrorCode::kFailedPrecondition);

  std::vector<ExposedPort> ports = engine().ExposedPorts(id, r.token);
  ASSERT_EQ(ports.size(), 3u);
  EXPECT_EQ(ports[0].guest_port, 22) << "SSH's first";
  EXPECT_EQ(ports[1].guest_port, 8080);
  EXPECT_EQ(ports[2].guest_port, 9090);
  auto expect_unexpose_error = [&](std::uint16_t port, const std::optional<std::string>& token,
                                   ErrorCode code) {
    ExpectCode([&] { engine().UnexposePort(id, port, token); }, code,
               "port " + std::to_string(port) + " was closed");
  };
  expect_unexpose_error(8080, std::string("not-its-token"), ErrorCode::kPermissionDenied);
  expect_unexpose_error(22, r.token, ErrorCode::kFailedPrecondition);  // SSH's stays
  engine().UnexposePort(id, 8080, r.token);
  expect_unexpose_error(8080, r.token, ErrorCode::kNotFound);  // not exposed any more
  EXPECT_EQ(engine().ExposedPorts(id, std::nullopt).size(), 2u);
  ExpectCode([&] { engine().ExposedPorts(SandboxId::Generate(), std::nullopt); },
             ErrorCode::kNotFound, "an unknown sandbox has ports");
}

TEST_F(EngineTest, ADestroyWhoseReasonPassedMeanwhileKeepsTheSandbox) {
  CreateRequest request;
  request.ttl_seconds = 1;
  CreateResult r = engine().Create(request);
  const SandboxId id = r.sandbox.id;
  // The reaper's question, asked again once nothing moves the sandbox: an
  // extend that landed after the reaper's look keeps it.
  engine().SetTimeToLive(id, 600, r.token);
  engine().Destroy(id, std::nullopt, "time to live expired", false, [](const Sandbox& now) {
    return now.expires_at && *now.expires_at <= NowUnix();
  });
  ASSERT_TRUE(store_.Get(id));
  EXPECT_EQ(vms_.vms.at(id), VmState::kRunning);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  engine().ReapOnce();
  EXPECT_TRUE(store_.Get(id)) << "extended: not reaped";
  engine().Destroy(id, std::nullopt, "still due", false, [](const Sandbox&) { return true; });
  EXPECT_FALSE(store_.Get(id));
}

TEST_F(EngineTest, APausedSandboxKeepsItsNewTimeToLiveForItsResume) {
  options_.max_paused = std::chrono::seconds(600);
  CreateResult r = engine().Create({});
  const SandboxId id = r.sandbox.id;
  Sandbox paused = engine().Pause(id, r.token);
  Sandbox changed = engine().SetTimeToLive(id, 3000, r.token);
  EXPECT_EQ(changed.state, SandboxState::kPaused);
  EXPECT_EQ(changed.ttl_left_seconds, 3000);
  EXPECT_EQ(*changed.expires_at, *paused.expires_at) << "the end of its time paused stays";
  Sandbox resumed = engine().Resume(id, r.token);
  EXPECT_NEAR(static_cast<double>(*resumed.expires_at - NowUnix()), 3000.0, 2.0);
}

TEST_F(EngineTest, AFailedPauseLeavesTheSandboxReadyAndAFailedResumeLeavesItPaused) {
  CreateResult r = engine().Create({});
  vms_.fail_pause = true;
  try {
    engine().Pause(r.sandbox.id, std::nullopt);
    ADD_FAILURE() << "the pause passed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNoSpace);
  }
  EXPECT_EQ(store_.Get(r.sandbox.id)->state, SandboxState::kReady);
  vms_.fail_pause = false;
  engine().Pause(r.sandbox.id, std::nullopt);
  vms_.fail_resume = true;
  EXPECT_THROW(engine().Resume(r.sandbox.id, std::nullopt), Error);
  EXPECT_EQ(store_.Get(r.sandbox.id)->state, SandboxState::kPaused);
  vms_.fail_resume = false;
  engine().Resume(r.sandbox.id, std::nullopt);
  EXPECT_EQ(store_.Get(r.sandbox.id)->state, SandboxState::kReady);
}

TEST_F(EngineTest, PausedTooLongIsDestroyedAndEachCallerHasAPausedLimit) {
  options_.max_paused = std::chrono::seconds(1);
  options_.max_paused_per_owner = 1;
  CreateResult a = engine().Create({});
  CreateResult b = engine().Create({});
  engine().Pause(a.sandbox.id, std::nullopt);
  try {
    engine().Pause(b.sandbox.id, std::nullopt);
    ADD_FAILURE() << "paused past the limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
  }
  EXPECT_EQ(vms_.vms.at(b.sandbox.id), VmState::kRunning);  // refused before any work
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  engine().ReapOnce();
  EXPECT_FALSE(store_.Get(a.sandbox.id));
  EXPECT_EQ(vms_.vms.count(a.sandbox.id), 0u);
  EXPECT_TRUE(store_.Get(b.sandbox.id));
}

// Waits until the first warm pool has `ready` members.
void WaitForPool(Engine& engine, std::size_t ready) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (engine.Status().pools.at(0).ready != ready) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the pool did not reach " << ready;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_F(EngineTest, AWarmPoolHandsOutProvisionedSandboxesAndRefills) {
  options_.max_sandboxes = 5;
  options_.pools = {{"default", 256, 1, 2}};
  engine().StartPool();
  WaitForPool(engine(), 2);
  // Members are nobody's: not listed, not found.
  EXPECT_TRUE(engine().List().empty());
  EXPECT_EQ(store_.List().size(), 2u);
  for (const auto& s : store_.List()) {
    EXPECT_FALSE(engine().Get(s.id));
    EXPECT_FALSE(s.expires_at) << "a member's TTL starts when it is handed out";
  }
  CreateRequest request;
  request.owner = "token:abc";
  request.ttl_seconds = 900;
  CreateResult r = engine().Create(request);
  EXPECT_EQ(r.sandbox.owner, "token:abc");
  EXPECT_FALSE(r.password.empty());
  EXPECT_EQ(r.host_key, "ssh-ed25519 AAAAfake");
  EXPECT_EQ(engine().GetWithToken(r.sandbox.id, r.token).id, r.sandbox.id);
  EXPECT_NEAR(static_cast<double>(*store_.Get(r.sandbox.id)->expires_at - NowUnix()), 900.0, 2.0);
  EXPECT_EQ(engine().List().size(), 1u);
  EXPECT_EQ(engine().Status().pools[0].hits, 1u);
  // Another size is not the pool's: a miss is counted only for a matching request.
  CreateRequest other;
  other.memory_mib = 512;
  engine().Create(other);
  EXPECT_EQ(engine().Status().pools[0].misses, 0u);
  WaitForPool(engine(), 2);  // refilled
  // A caller at its limit takes nothing from the pool.
  request.owner_limit = 1;
  EXPECT_THROW(engine().Create(request), Error);
  EXPECT_EQ(engine().Status().pools[0].ready, 2u);
  // Stopping the pool destroys its members: their passwords die with it.
  engine().StopPool();
  EXPECT_EQ(store_.List().size(), 2u);  // the two handed out or made for callers
  for (const auto& s : store_.List()) EXPECT_NE(s.owner, "pool");
}

TEST_F(EngineTest, ReconcileDestroysThePoolMembersOfAPreviousDaemon) {
  Sandbox member(SandboxId::Generate());
  member.owner = "pool";
  member.created_at = NowUnix();
  store_.Insert(member);
  store_.Transition(member.id, SandboxState::kProvisioning);
  store_.Transition(member.id, SandboxState::kReady);
  vms_.vms.insert_or_assign(member.id, VmState::kRunning);
  ReconcileReport report = engine().Reconcile();
  EXPECT_FALSE(store_.Get(member.id));
  EXPECT_EQ(vms_.vms.count(member.id), 0u);
  EXPECT_THAT(::testing::PrintToString(report.actions), HasSubstr("warm pool member"));
}

TEST_F(EngineTest, RollsBackWhenTheNetworkFails) {
  networks_.fail_setup = true;
  ExpectCreateFails({}, ErrorCode::kResourceExhausted, "address pool exhausted");
}

TEST_F(EngineTest, RollsBackWhenTheVmFails) {
  vms_.fail_start = true;
  ExpectCreateFails({}, ErrorCode::kFailedPrecondition, "QEMU refused");
}

TEST_F(EngineTest, RollsBackWhenProvisioningFails) {
  provisioner_.fail = true;
  ExpectCreateFails({}, ErrorCode::kFailedPrecondition, "setup script failed");
  bool logged = false;
  for (const auto& e : store_.Events()) {
    logged |= e.kind == "failed" && e.cause == "failed_precondition" &&
              e.detail.find("setup script failed") != std::string::npos;
  }
  EXPECT_TRUE(logged);
}

TEST_F(EngineTest, MetricsCountCreatesFailuresPhasesAndRemovalsByCause) {
  options_.per_sandbox_metrics = true;
  ExpectCreateFails({.memory_mib = 64}, ErrorCode::kInvalidArgument, "memory_mib 64");
  provisioner_.fail = true;
  ExpectCreateFails({}, ErrorCode::kFailedPrecondition, "setup script failed");
  provisioner_.fail = false;
  CreateResult kept = engine().Create({});
  CreateResult expiring = engine().Create({.ttl_seconds = 1});
  CreateResult destroyed = engine().Create({});
  engine().Destroy(destroyed.sandbox.id, std::nullopt);
  engine().StartReaper();
  // The row goes first, then the counters and the event: waited for last.
  auto expired = [&] {
    for (const Event& e : store_.Events()) {
      if (e.sandbox_id == expiring.sandbox.id.str() && e.kind == "expired") return true;
    }
    return false;
  };
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!expired() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  const std::string text = engine().metrics().Render();
  for (const char* line : {
           "ephemera_creates_total{kind=\"vm\",start=\"boot\"} 3\n",
           "ephemera_create_failures_total{kind=\"vm\",cause=\"invalid_argument\"} 1\n",
           "ephemera_create_failures_total{kind=\"vm\",cause=\"failed_precondition\"} 1\n",
           "ephemera_create_phase_seconds_count{kind=\"vm\",phase=\"total\"} 3\n",
           "ephemera_create_phase_seconds_count{kind=\"vm\",phase=\"provision\"} 3\n",
           "ephemera_removals_total{event=\"destroyed\",cause=\"request\"} 1\n",
           "ephemera_removals_total{event=\"expired\",cause=\"ttl\"} 1\n",
           "ephemera_removals_total{event=\"failed\",cause=\"failed_precondition\"} 1\n",
           "ephemera_sandboxes{state=\"ready\",kind=\"vm\"} 1\n",
           "ephemera_sandboxes{state=\"ready\",kind=\"container\"} 0\n",
           "ephemera_sandboxes_limit 3\n",
           "ephemera_driver_up{driver=\"qemu\"} 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
  std::vector<std::string> kinds;
  for (const Event& e : store_.Events()) {
    if (e.sandbox_id == expiring.sandbox.id.str()) kinds.push_back(e.kind + ":" + e.cause);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"created:", "ready:", "expired:ttl"}));
  EXPECT_EQ(store_.Events().back().sandbox_id, expiring.sandbox.id.str());
  engine().Destroy(kept.sandbox.id, std::nullopt);
}

TEST_F(EngineTest, AVetoRefusesACreateBeforeAnythingIsMade) {
  std::vector<std::string> asked;
  engine().SetCreateVeto([&](const CreateRequest& request, const SandboxSpec& spec) {
    asked.push_back(request.owner + "/" + spec.image);
    return request.owner == "mallory" ? std::optional<std::string>("mallory may not")
                                      : std::nullopt;
  });
  ExpectCreateFails({.owner = "mallory"}, ErrorCode::kPermissionDenied, "mallory may not");
  ExpectNothingLeft();
  CreateResult ok = engine().Create({.owner = "alice"});
  EXPECT_EQ(asked, (std::vector<std::string>{"mallory/default", "alice/default"}));
  EXPECT_NE(engine().metrics().Render().find(
                "ephemera_create_failures_total{kind=\"vm\",cause=\"vetoed\"} 1\n"),
            std::string::npos);
  engine().Destroy(ok.sandbox.id, std::nullopt);
}

TEST_F(EngineTest, BadRequestsAreRejectedBeforeAnythingIsMade) {
  ExpectCreateFails({.image = "nope"}, ErrorCode::kInvalidArgument, "unknown image 'nope'");
  ExpectCreateFails({.image = "../../etc"}, ErrorCode::kInvalidArgument, "unknown image");
  ExpectCreateFails({.memory_mib = 64}, ErrorCode::kInvalidArgument, "memory_mib 64");
  ExpectCreateFails({.memory_mib = 1 << 20}, ErrorCode::kInvalidArgument, "memory_mib");
  ExpectCreateFails({.vcpus = 0}, ErrorCode::kInvalidArgument, "vcpus 0");
  ExpectCreateFails({.ttl_seconds = 0}, ErrorCode::kInvalidArgument, "ttl_seconds 0");
  ExpectCreateFails({.ttl_seconds = -5}, ErrorCode::kInvalidArgument, "ttl_seconds -5");
  ExpectCreateFails({.ttl_seconds = 10'000'000}, ErrorCode::kInvalidArgument, "ttl_seconds");
}

TEST_F(EngineTest, LimitHoldsUnderConcurrentCreatesAndParallelismIsBounded) {
  provisioner_.delay = 100ms;
  Engine& shared = engine();  // built before the threads share it
  std::atomic<int> created{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      try {
        shared.Create({});
        ++created;
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kResourceExhausted) ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 3);
  EXPECT_EQ(refused.load(), 5);
  EXPECT_LE(provisioner_.max_running.load(), 2);
  EXPECT_EQ(store_.List().size(), 3u);
  EXPECT_EQ(vms_.vms.size(), 3u);
}

TEST_F(EngineTest, DestroyNeedsTheSandboxsTokenUnlessAdmin) {
  CreateResult a = engine().Create({});
  CreateResult b = engine().Create({});
  try {
    engine().Destroy(a.sandbox.id, b.token);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kPermissionDenied);
  }
  EXPECT_TRUE(store_.Get(a.sandbox.id));
  EXPECT_TRUE(vms_.vms.count(a.sandbox.id));
  engine().Destroy(a.sandbox.id, a.token);
  engine().Destroy(b.sandbox.id, std::nullopt);  // the local admin
  ExpectNothingLeft();
  EXPECT_THROW(engine().Destroy(a.sandbox.id, std::nullopt), Error);  // now unknown
}

TEST_F(EngineTest, ReaperDestroysExpiredAndStoppedSandboxes) {
  CreateResult expiring = engine().Create({.ttl_seconds = 1});
  CreateResult stopping = engine().Create({});
  CreateResult staying = engine().Create({});
  vms_.Shutdown(stopping.sandbox.id, 0ms);  // the guest powered itself off
  engine().StartReaper();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (store_.Count() > 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(store_.Get(expiring.sandbox.id));
  EXPECT_FALSE(store_.Get(stopping.sandbox.id));
  EXPECT_TRUE(store_.Get(staying.sandbox.id));
  EXPECT_EQ(vms_.vms.size(), 1u);
  EXPECT_EQ(networks_.live.size(), 1u);
}

TEST_F(EngineTest, EgressDefaultsToWhatTheHostAllowsAndMoreNeedsOutboundNat) {
  // Outbound NAT off: sandboxes reach nothing, and cannot ask for more.
  CreateResult closed = engine().Create({});
  EXPECT_EQ(closed.sandbox.spec.egress.mode, EgressMode::kNone);
  EXPECT_EQ(networks_.last_egress.mode, EgressMode::kNone);
  EXPECT_EQ(store_.Get(closed.sandbox.id)->spec.egress.mode, EgressMode::kNone);
  engine().Destroy(closed.sandbox.id, std::nullopt);
  ExpectCreateFails({.egress = MakeEgressPolicy("all", {})}, ErrorCode::kFailedPrecondition,
                    "network.outbound_nat");
  ExpectCreateFails({.egress = MakeEgressPolicy("allow", {"203.0.113.0/24"})},
                    ErrorCode::kFailedPrecondition, "outbound NAT");
  // A shared bridge (libvirt's network) rules its own traffic: all, as
  // far as ephemera goes, and nothing else can be asked.
  vms_.mode = LinkMode::kShared;
  CreateResult shared = engine().Create({});
  EXPECT_EQ(shared.sandbox.spec.egress.mode, EgressMode::kAll);
  engine().Destroy(shared.sandbox.id, std::nullopt);
  CreateResult named_all = engine().Create({.egress = MakeEgressPolicy("all", {})});
  EXPECT_EQ(named_all.sandbox.spec.egress.mode, EgressMode::kAll);
  engine().Destroy(named_all.sandbox.id, std::nullopt);
  ExpectCreateFails({.egress = MakeEgressPolicy("none", {})}, ErrorCode::kFailedPrecondition,
                    "shared bridge");
}

TEST_F(EngineTest, AnAllowListReachesTheNetworkTheStoreAndTheGuestsResolver) {
  options_.outbound_nat = true;
  options_.dns_servers = {Ipv4::Parse("1.1.1.1")};
  MakeAgentImage(1);
  vms_.secrets = true;
  vms_.agent = true;
  {
    // Names need an upstream to ask.
    options_.dns_servers.clear();
    ExpectCreateFails({.image = "agent", .egress = MakeEgressPolicy("allow", {"example.test"})},
                      ErrorCode::kFailedPrecondition, "network.dns_servers");
    options_.dns_servers = {Ipv4::Parse("1.1.1.1")};
    engine_.reset();
  }
  CreateResult open = engine().Create({.image = "agent"});
  EXPECT_EQ(open.sandbox.spec.egress.mode, EgressMode::kAll);
  EXPECT_THAT(provisioner_.last_agent_dns, ::testing::ElementsAre("1.1.1.1"));
  const EgressPolicy allow = MakeEgressPolicy("allow", {"example.test", "203.0.113.0/24"});
  CreateResult listed = engine().Create({.image = "agent", .egress = allow});
  EXPECT_EQ(networks_.last_egress, allow);
  EXPECT_EQ(store_.Get(listed.sandbox.id)->spec.egress, allow);
  // Its names resolve through its gateway alone, which fills its set.
  const SandboxNetwork net = *networks_.Find(listed.sandbox.id);
  EXPECT_THAT(provisioner_.last_agent_dns, ::testing::ElementsAre(net.subnet.gateway().str()));
  engine().Destroy(open.sandbox.id, std::nullopt);
  engine().Destroy(listed.sandbox.id, std::nullopt);
  ExpectNothingLeft();
}

TEST_F(EngineTest, TheIdleTimeoutReapsAnUnusedSandboxAndKeepsABusyOne) {
  options_.default_idle_timeout = 1s;
  options_.max_sandboxes = 4;
  CreateResult idle = engine().Create({});
  CreateResult connected = engine().Create({});
  CreateResult talking = engine().Create({.idle_timeout_seconds = 1});
  CreateResult forever = engine().Create({.idle_timeout_seconds = 0});
  EXPECT_EQ(idle.sandbox.spec.idle_timeout_seconds, 1);
  EXPECT_EQ(store_.Get(forever.sandbox.id)->spec.idle_timeout_seconds, 0);
  {
    std::lock_guard lock(networks_.mutex);
    networks_.activity[connected.sandbox.id] = {1, 0};  // an SSH session open
    networks_.activity[talking.sandbox.id] = {0, 0};
  }
  engine().StartReaper();
  // Traffic beyond a trickle keeps `talking`; a few bytes would not.
  std::atomic<bool> done{false};
  std::thread traffic([&] {
    for (std::uint64_t bytes = 0; !done; bytes += 10000) {
      {
        std::lock_guard lock(networks_.mutex);
        networks_.activity[talking.sandbox.id].traffic_bytes = bytes;
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (store_.Get(idle.sandbox.id) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(2500ms);  // past the others' timeouts, were they idle
  done = true;
  traffic.join();
  EXPECT_FALSE(store_.Get(idle.sandbox.id)) << "an idle sandbox was kept";
  EXPECT_TRUE(store_.Get(connected.sandbox.id));
  EXPECT_TRUE(store_.Get(talking.sandbox.id));
  EXPECT_TRUE(store_.Get(forever.sandbox.id));
  // The session ends: idle from then on.
  {
    std::lock_guard lock(networks_.mutex);
    networks_.activity[connected.sandbox.id] = {0, 0};
  }
  deadline = std::chrono::steady_clock::now() + 10s;
  while (store_.Get(connected.sandbox.id) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE(store_.Get(connected.sandbox.id));
  EXPECT_THROW(engine().Create({.idle_timeout_seconds = -1}), Error);
  EXPECT_THROW(engine().Create({.idle_timeout_seconds = 86401}), Error);
}

TEST_F(EngineTest, ReconcileDestroysInterruptedAdoptsRunningAndRemovesOrphans) {
  CreateResult running = engine().Create({});
  // A create interrupted by a crash: recorded, VM and network half made.
  Sandbox interrupted(SandboxId::Generate());
  interrupted.token_sha256 = std::string(64, '0');
  interrupted.created_at = NowUnix();
  store_.Insert(interrupted);
  store_.Transition(interrupted.id, SandboxState::kProvisioning);
  networks_.Setup(interrupted.id, {}, LinkMode::kTap);
  vms_.vms.insert_or_assign(interrupted.id, VmState::kRunning);
  // A VM and a network nothing records.
  SandboxId orphan = SandboxId::Generate();
  vms_.vms.insert_or_assign(orphan, VmState::kRunning);
  networks_.Setup(SandboxId::Generate(), {}, LinkMode::kTap);

  engine_.reset();  // the daemon restarts
  ReconcileReport report = engine().Reconcile();
  EXPECT_TRUE(store_.Get(running.sandbox.id));
  EXPECT_FALSE(store_.Get(interrupted.id));
  EXPECT_EQ(vms_.vms.size(), 1u);
  EXPECT_TRUE(vms_.vms.count(running.sandbox.id));
  EXPECT_EQ(networks_.live.size(), 1u);
  std::string all;
  for (const auto& line : report.actions) all += line + "\n";
  EXPECT_THAT(all, HasSubstr("adopted sandbox " + running.sandbox.id.str()));
  EXPECT_THAT(all, HasSubstr("destroyed sandbox " + interrupted.id.str() +
                             ": its creation was interrupted"));
  EXPECT_THAT(all, HasSubstr("removed qemu VM " + orphan.str()));
  EXPECT_THAT(all, HasSubstr("removed network"));
}

void ExpectUnauthenticated(Engine& engine, const std::string& secret, const std::string& needle) {
  try {
    engine.Authenticate(secret);
    ADD_FAILURE() << "authenticated";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnauthenticated);
    EXPECT_THAT(e.what(), HasSubstr(needle));
  }
}

TEST_F(EngineTest, AccessTokensAuthenticateUntilDisabledExpiredOrDeleted) {
  IssuedAccessToken issued = engine().AddAccessToken({"ci", std::nullopt, 2, 60});
  EXPECT_EQ(issued.secret.size(), 64u);
  EXPECT_THAT(issued.record.id, ::testing::StartsWith("tok_"));
  EXPECT_EQ(issued.record.token_sha256, Sha256Hex(issued.secret));
  EXPECT_EQ(engine().Authenticate(issued.secret).id, issued.record.id);
  ExpectUnauthenticated(engine(), issued.secret + "x", "unknown access token");

  engine().SetAccessTokenEnabled(issued.record.id, false);
  ExpectUnauthenticated(engine(), issued.secret, "is disabled");
  engine().SetAccessTokenEnabled(issued.record.id, true);
  EXPECT_NO_THROW(engine().Authenticate(issued.secret));

  // A restarted engine (fresh cache) sees the same tokens.
  engine_.reset();
  ASSERT_EQ(engine().ListAccessTokens().size(), 1u);
  EXPECT_EQ(engine().ListAccessTokens()[0].max_sandboxes, 2);
  EXPECT_TRUE(engine().ListAccessTokens()[0].last_used_at);
  engine().DeleteAccessToken(issued.record.id);
  ExpectUnauthenticated(engine(), issued.secret, "unknown access token");
  EXPECT_THROW(engine().DeleteAccessToken(issued.record.id), Error);

  // Expiry is checked at use; seconds resolution, so back-date it.
  IssuedAccessToken expiring = engine().AddAccessToken({"", 1, std::nullopt, std::nullopt});
  AccessToken record = expiring.record;
  engine_.reset();
  store_.DeleteToken(record.id);
  record.expires_at = NowUnix() - 1;
  store_.InsertToken(record);
  ExpectUnauthenticated(engine(), expiring.secret, "has expired");
}

TEST_F(EngineTest, BadAccessTokenRequestsNameTheField) {
  EXPECT_THROW(engine().AddAccessToken({"bad name/with slash", {}, {}, {}}), Error);
  try {
    engine().AddAccessToken({"", std::nullopt, 0, std::nullopt});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("max_sandboxes"));
  }
  EXPECT_TRUE(engine().ListAccessTokens().empty());
}

TEST_F(EngineTest, APerOwnerLimitBoundsThatOwnerOnly) {
  CreateRequest mine;
  mine.owner = "token:tok_a";
  mine.owner_limit = 1;
  engine().Create(mine);
  try {
    engine().Create(mine);
    ADD_FAILURE() << "created over the owner's limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
  }
  EXPECT_EQ(store_.Count(), 1u);
  CreateRequest theirs;
  theirs.owner = "token:tok_b";
  theirs.owner_limit = 1;
  EXPECT_NO_THROW(engine().Create(theirs));
}

TEST_F(EngineTest, AVmThatCannotBeCheckedIsNeverTakenForGone) {
  // Out of descriptors (or an I/O error), the driver cannot tell: the
  // sandbox must stay, not be destroyed with its QEMU left running.
  CreateResult r = engine().Create({});
  vms_.cannot_check = true;
  for (int i = 0; i < 3; ++i) engine().ReapOnce();
  EXPECT_EQ(engine().Reconcile().actions.size(), 1u);  // "kept ..."
  vms_.cannot_check = false;
  ASSERT_TRUE(engine().Get(r.sandbox.id));
  EXPECT_EQ(engine().Get(r.sandbox.id)->state, SandboxState::kReady);
  EXPECT_EQ(vms_.vms.count(r.sandbox.id), 1u);
}

TEST_F(EngineTest, TheReaperDestroysRowsACreateLeftBehindButNeverOneInProgress) {
  // A row left creating (its create's rollback could not write) counts
  // against the limit until the reaper removes it.
  Sandbox stuck(SandboxId::Generate());
  stuck.token_sha256 = std::string(64, 'a');
  stuck.created_at = NowUnix();
  store_.Insert(stuck);
  // Meanwhile a slow create is under way: its row is in progress, not stuck.
  provisioner_.delay = 300ms;
  std::thread creating([&] { engine().Create({}); });
  std::this_thread::sleep_for(100ms);
  engine().ReapOnce();
  EXPECT_FALSE(store_.Get(stuck.id)) << "the stuck row is still there";
  creating.join();
  ASSERT_EQ(engine().List().size(), 1u);
  EXPECT_EQ(engine().List()[0].state, SandboxState::kReady);
}

TEST_F(EngineTest, TheHostMemoryBudgetRefusesWhatWouldOvercommit) {
  options_.host_memory_mib = 700;
  options_.sandbox_overhead_mib = 64;
  engine().Create({});  // 256 + 64
  engine().Create({});  // 640 in all
  try {
    engine().Create({});
    ADD_FAILURE() << "created past the budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("memory budget"));
  }
  EXPECT_EQ(engine().List().size(), 2u);
  CreateRequest small;
  small.memory_mib = 128;  // 128 + 64 still fits in the 60 MiB left? no: refused too
  EXPECT_THROW(engine().Create(small), Error);
}

TEST_F(EngineTest, AnImageThatNeedsALargerTranslationCacheCountsItInTheBudget) {
  // A distribution's systemd boot needs 128 MiB of TCG cache where 32 are
  // configured: its sandbox takes 96 MiB more of the host.
  const std::filesystem::path image = test::MakeFakeKernelImage(images_dir_.path(), "distro");
  test::WriteBytes(image / "manifest.json",
                   R"({"version":1,"format":"kernel","kernel":"vmlinux","initrd":"initrd.img",)"
                   R"("rootfs":"rootfs.ext4","tcg_tb_size_mib":128})");
  options_.host_memory_mib = 700;
  options_.sandbox_overhead_mib = 64;  // QEMU + the configured 32 MiB cache
  options_.tcg_tb_size_mib = 32;
  CreateRequest distro;
  distro.image = "distro";
  CreateResult r = engine().Create(distro);  // 256 + 64 + 96 = 416
  EXPECT_EQ(store_.Get(r.sandbox.id)->overhead_mib, 160u);
  try {
    engine().Create({});  // 256 + 64 more would be 736
    ADD_FAILURE() << "created past the budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kResourceExhausted);
    EXPECT_THAT(e.what(), HasSubstr("416 of 700 MiB committed"));
  }
  CreateRequest small;
  small.memory_mib = 128;  // 128 + 64: fits in the 284 left
  CreateResult s = engine().Create(small);
  EXPECT_EQ(store_.Get(s.sandbox.id)->overhead_mib, 64u);
}

TEST_F(EngineTest, CreatesAreRefusedBelowTheFreeDiskFloor) {
  options_.disk_watch = state_.path();
  options_.min_free_disk_mib = std::numeric_limits<std::uint32_t>::max();
  ExpectCreateFails({}, ErrorCode::kNoSpace, "low on disk space");
}

}  // namespace
}  // namespace ephemera

namespace ephemera {
namespace {

TEST_F(EngineTest, APipelineMachineDerivesItsNetworkAndIsOneOfItsNameInARun) {
  CreateRequest request;
  request.run_id = "run-42";
  request.machine = "ubuntu-6.1";
  CreateResult first = engine().Create(request);
  ASSERT_TRUE(networks_.last_derive.has_value());
  EXPECT_EQ(networks_.last_derive->run_id, "run-42");
  EXPECT_EQ(networks_.last_derive->machine, "ubuntu-6.1");
  EXPECT_EQ(first.sandbox.spec.run_id, "run-42");
  EXPECT_EQ(first.sandbox.host_key, "ssh-ed25519 AAAAfake");
  auto stored = store_.Get(first.sandbox.id);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->spec.machine, "ubuntu-6.1");
  EXPECT_EQ(stored->host_key, "ssh-ed25519 AAAAfake");

  // The same machine of the same run again is an error, and leaves nothing.
  try {
    engine().Create(request);
    ADD_FAILURE() << "a second run-42/ubuntu-6.1 was created";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr("run 'run-42' already has a machine named 'ubuntu-6.1'"));
    EXPECT_THAT(e.what(), HasSubstr(first.sandbox.id.str()));
  }
  EXPECT_EQ(store_.List().size(), 1u);
  EXPECT_EQ(networks_.live.size(), 1u);

  // Another machine of the run, and a create without a run, derive nothing alike.
  request.machine = "fedora-6.5";
  engine().Create(request);
  EXPECT_EQ(networks_.last_derive->machine, "fedora-6.5");
  engine().Create(CreateRequest{});
  EXPECT_FALSE(networks_.last_derive.has_value());
}

TEST_F(EngineTest, BadPipelineNamesAreRefusedBeforeAnythingIsMade) {
  CreateRequest only_run{};
  only_run.run_id = "r1";
  ExpectCreateFails(only_run, ErrorCode::kInvalidArgument, "'run_id' and 'name' go together");
  CreateRequest spaced{};
  spaced.run_id = "r1";
  spaced.machine = "a b";
  ExpectCreateFails(spaced, ErrorCode::kInvalidArgument, "'name' must be 1 to 63");
  CreateRequest long_run{};
  long_run.run_id = std::string(64, 'r');
  long_run.machine = "m";
  ExpectCreateFails(long_run, ErrorCode::kInvalidArgument, "'run_id' must be 1 to 63");
}

TEST_F(EngineTest, AKernelAndRootfsPairIsCheckedAndRemoteCallersReachOnlyListedRegistries) {
  options_.registry.registries = {{"registry.example:5000", false, {}, {}}};
  CreateRequest both;
  both.image = "default";
  both.kernel = "oci:/k";
  both.rootfs = "oci:/r";
  ExpectCreateFails(both, ErrorCode::kInvalidArgument, "give 'image' or 'kernel' and 'rootfs'");
  CreateRequest half;
  half.kernel = "oci:/k";
  ExpectCreateFails(half, ErrorCode::kInvalidArgument, "'kernel' needs a 'rootfs'");
  CreateRequest bad;
  bad.kernel = "ftp://x";
  bad.rootfs = "oci:/r";
  ExpectCreateFails(bad, ErrorCode::kInvalidArgument, "'kernel'");

  CreateRequest remote;
  remote.owner = "tok_1";
  remote.kernel = "oci:/etc";
  remote.rootfs = "docker://registry.example:5000/rootfs:1";
  ExpectCreateFails(remote, ErrorCode::kPermissionDenied, "'oci:/etc'");
  remote.kernel = "docker://elsewhere.example/kernel:1";
  ExpectCreateFails(remote, ErrorCode::kPermissionDenied, "elsewhere.example");

  // A local caller's pair is imported on first use, under its pair name;
  // a missing layout says which.
  CreateRequest local;
  local.kernel = "oci:" + (images_dir_.path() / "no-such-layout").string();
  local.rootfs = local.kernel;
  const std::string name = PairImageName(oci::ImageReference::Parse(*local.kernel),
                                         oci::ImageReference::Parse(*local.rootfs));
  EXPECT_THAT(name, ::testing::MatchesRegex("pair-[0-9a-f]{16}"));
  ExpectCreateFails(local, ErrorCode::kNotFound, "importing image '" + name + "'");
  EXPECT_FALSE(std::filesystem::exists(images_dir_.path() / name));
  // A rootfs alone (its own kernel) is another image; it boots with the
  // default image's initrd, named when missing.
  CreateRequest alone;
  alone.rootfs = local.rootfs;
  const std::string own = PairImageName(std::nullopt, oci::ImageReference::Parse(*alone.rootfs));
  EXPECT_NE(own, name);
  std::filesystem::remove(images_dir_.path() / "default" / "initrd.img");
  ExpectCreateFails(alone, ErrorCode::kFailedPrecondition, "needs ephemera's initrd");
}

}  // namespace
}  // namespace ephemera

namespace ephemera {
namespace {

// An image as imports leave one (NAME -> NAME-<hash12>) holding `kib` KiB
// of data, last used `age` ago.
void MakeSizedImage(const std::filesystem::path& dir, const std::string& name, std::size_t kib,
                    std::chrono::seconds age) {
  const std::string folder = name + "-0123456789ab";
  auto image = test::MakeFakeKernelImage(dir, folder);
  if (!std::filesystem::is_symlink(dir / name))
    std::filesystem::create_directory_symlink(folder, dir / name);
  test::WriteBytes(image / "extra", std::string(kib << 10, 'x'));
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = ::time(nullptr) - age.count();
  times[0].tv_nsec = times[1].tv_nsec = 0;
  ASSERT_EQ(::utimensat(AT_FDCWD, image.c_str(), times, 0), 0);
}

TEST_F(EngineTest, TheImageCacheEvictsOnlyWhatCanComeBackLeastRecentlyUsedFirst) {
  options_.image_cache_max_mib = 1;
  MakeSizedImage(images_dir_.path(), "mine", 600, 3h);  // pulled by hand: kept
  MakeSizedImage(images_dir_.path(), "pair-0000000000000001", 600, 2h);
  MakeSizedImage(images_dir_.path(), "pair-0000000000000002", 600, 1h);
  MakeSizedImage(images_dir_.path(), "pair-0000000000000003", 600, 10s);  // just used: kept
  // An import makes room first (and then fails here: there is no such layout).
  EXPECT_THROW(engine().ImportImage({"x", "oci:/nonexistent", "oci:/nonexistent", std::nullopt}),
               Error);
  EXPECT_TRUE(std::filesystem::exists(images_dir_.path() / "mine"));
  EXPECT_FALSE(std::filesystem::exists(images_dir_.path() / "pair-0000000000000001"));
  EXPECT_FALSE(std::filesystem::exists(images_dir_.path() / "pair-0000000000000002"));
  EXPECT_TRUE(std::filesystem::exists(images_dir_.path() / "pair-0000000000000003"));
  EXPECT_TRUE(std::filesystem::exists(images_dir_.path() / "default"));
  // What cannot be evicted is over the limit: the import is refused, saying why.
  MakeSizedImage(images_dir_.path(), "mine-too", 600, 3h);
  try {
    engine().ImportImage({"x", "oci:/nonexistent", "oci:/nonexistent", std::nullopt});
    ADD_FAILURE() << "imported over the limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNoSpace);
    EXPECT_THAT(e.what(), HasSubstr("over pull.cache_max_mib = 1 MiB"));
  }
  EXPECT_TRUE(std::filesystem::exists(images_dir_.path() / "mine-too"));
}

TEST_F(EngineTest, TheImageCacheNeverEvictsAnImageInUse) {
  options_.image_cache_max_mib = 1;
  MakeSizedImage(images_dir_.path(), "pair-0000000000000001", 1200, 2h);
  CreateRequest request;
  request.image = "pair-0000000000000001";
  engine().Create(request);
  // Aged again, as if the create was long ago.
  MakeSizedImage(images_dir_.path(), "pair-0000000000000001", 1200, 2h);
  try {
    engine().ImportImage({"x", "oci:/nonexistent", "oci:/nonexistent", std::nullopt});
    ADD_FAILURE() << "imported over the limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNoSpace) << e.what();
  }
  EXPECT_TRUE(std::filesystem::exists(images_dir_.path() / "pair-0000000000000001" / "vmlinux"));
}

}  // namespace
}  // namespace ephemera

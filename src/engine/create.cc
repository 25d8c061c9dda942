// The create pipeline: validate, record, network, VM, provision, ready.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "core/event_types.h"
#include "core/log_context.h"
#include "core/random.h"
#include "core/sha256.h"
#include "core/text.h"
#include "engine/engine.h"
#include "guest/agent_provision.h"
#include "vm/console.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kCloneAgentTimeout{15000};

constexpr std::string_view kTokenAlphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";

// Run ids and machine names end up in inventories, event lines and logs.
void CheckPipelineName(const char* field, const std::string& value) {
  const bool ok =
      !value.empty() && value.size() <= 63 && std::all_of(value.begin(), value.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
      });
  if (!ok) {
    Fail(ErrorCode::kInvalidArgument, "'{}' must be 1 to 63 of letters, digits, '_', '.', '-'",
         field);
  }
}

oci::ImageReference ParseCreateReference(const char* field, const std::string& text) {
  try {
    return oci::ImageReference::Parse(text);
  } catch (const Error& e) {
    throw e.WithContext(std::string("'") + field + "'");
  }
}

}  // namespace

std::string PairImageName(const std::optional<oci::ImageReference>& kernel,
                          const oci::ImageReference& rootfs) {
  // A rootfs with its own kernel: named as if by an empty kernel reference.
  return "pair-" + Sha256Hex((kernel ? kernel->str() : "") + "\n" + rootfs.str()).substr(0, 16);
}

void Engine::ImportForCreate(const ImageImport& import, const std::string& owner) {
  try {
    ImportImage(import);
  } catch (const Error& e) {
    // The registry's errors name the host's files and accounts: only
    // local callers see them; the log keeps them for the operator.
    spdlog::warn("image {}: import for a create failed: {}", import.name, e.what());
    if (owner != "local") {
      Fail(e.code(), "image '{}' could not be imported (the daemon's log says why)", import.name);
    }
    throw e.WithContext("importing image '" + import.name + "'");
  }
}

std::string Engine::ResolveImage(const CreateRequest& request) {
  if (!request.kernel && !request.rootfs) {
    std::string name = request.image.value_or(options_.default_image);
    // An image configured by its references is imported by its first create.
    if (options_.configured_images.count(name) && !std::filesystem::exists(images_.dir() / name)) {
      ImportForCreate(ImageImport{name, "", "", std::nullopt}, request.owner);
    }
    return name;
  }
  if (request.image) Fail(ErrorCode::kInvalidArgument, "give 'image' or 'kernel' and 'rootfs'");
  if (!request.rootfs) {
    Fail(ErrorCode::kInvalidArgument,
         "'kernel' needs a 'rootfs' (a 'rootfs' alone boots the kernel it carries)");
  }
  std::optional<oci::ImageReference> kernel;
  if (request.kernel) kernel = ParseCreateReference("kernel", *request.kernel);
  auto rootfs = ParseCreateReference("rootfs", *request.rootfs);
  if (request.owner != "local") {
    // Remote callers must not make the daemon read its own files or reach
    // servers the operator did not name.
    std::vector<const oci::ImageReference*> refs = {&rootfs};
    if (kernel) refs.push_back(&*kernel);
    for (const auto* ref : refs) {
      const auto& listed = options_.registry.registries;
      if (ref->transport != oci::ImageReference::Transport::kRegistry ||
          std::none_of(listed.begin(), listed.end(),
                       [&](const oci::RegistryConfig& r) { return r.host == ref->registry; })) {
        Fail(ErrorCode::kPermissionDenied,
             "remote callers may give only docker:// references to the registries the daemon "
             "lists, not '{}'",
             ref->str().substr(0, 128));
      }
    }
  }
  std::string name = PairImageName(kernel, rootfs);
  if (!std::filesystem::exists(images_.dir() / name)) {
    ImportForCreate(ImageImport{name, kernel ? kernel->str() : "", rootfs.str(), std::nullopt},
                    request.owner);
  }
  return name;
}

Engine::Validated Engine::Validate(const CreateRequest& request, bool ask_veto) {
  Validated v;
  v.spec.kind = request.kind.value_or(SandboxKind::kVm);
  v.spec.memory_mib = request.memory_mib.value_or(options_.default_memory_mib);
  v.spec.vcpus = request.vcpus.value_or(options_.default_vcpus);
  if (v.spec.memory_mib < 128 || v.spec.memory_mib > options_.max_memory_mib) {
    Fail(ErrorCode::kInvalidArgument, "memory_mib {} is out of range [128, {}]", v.spec.memory_mib,
         options_.max_memory_mib);
  }
  if (v.spec.vcpus < 1 || v.spec.vcpus > options_.max_vcpus) {
    Fail(ErrorCode::kInvalidArgument, "vcpus {} is out of range [1, {}]", v.spec.vcpus,
         options_.max_vcpus);
  }
  v.spec.ttl = std::chrono::seconds(CheckedTtl(request.ttl_seconds));
  v.spec.idle_timeout_seconds =
      request.idle_timeout_seconds.value_or(options_.default_idle_timeout.count());
  if (v.spec.idle_timeout_seconds < 0 || v.spec.idle_timeout_seconds > options_.max_ttl.count()) {
    Fail(ErrorCode::kInvalidArgument, "idle_timeout_seconds {} is out of range [0, {}]",
         v.spec.idle_timeout_seconds, options_.max_ttl.count());
  }
  v.spec.egress = request.egress.value_or(DefaultEgress());
  if (!v.spec.egress.domains.empty() && options_.dns_servers.empty()) {
    Fail(ErrorCode::kFailedPrecondition,
         "egress allow-lists with domain names need an upstream resolver, and this host lists "
         "none (network.dns_servers)");
  }
  if (request.run_id.has_value() != request.machine.has_value()) {
    Fail(ErrorCode::kInvalidArgument, "'run_id' and 'name' go together");
  }
  if (request.run_id) {
    CheckPipelineName("run_id", *request.run_id);
    CheckPipelineName("name", *request.machine);
    v.spec.run_id = *request.run_id;
    v.spec.machine = *request.machine;
  }
  if (!request.name.empty()) CheckSandboxName(request.name);
  std::size_t keys_bytes = 0;
  for (const std::string& key : request.authorized_keys) {
    CheckAuthorizedKey(key);
    keys_bytes += key.size() + 1;
  }
  if (keys_bytes > kMaxAuthorizedKeysBytes) {
    Fail(ErrorCode::kInvalidArgument, "'ssh_keys' take {} bytes (at most {})", keys_bytes,
         kMaxAuthorizedKeysBytes);
  }
  // Asked before an image is pulled for it: the name asked for (none for a
  // kernel and rootfs pair, whose references the request carries).
  if (ask_veto) {
    v.spec.image = request.image.value_or(request.rootfs ? "" : options_.default_image);
    AskVeto(request, v.spec);
  }
  v.spec.image = ResolveImage(request);
  TouchImage(v.spec.image);
  try {
    v.image = images_.Get(v.spec.image);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound || e.code() == ErrorCode::kInvalidArgument) {
      Fail(ErrorCode::kInvalidArgument, "unknown image '{}'", v.spec.image.substr(0, 64));
    }
    throw;
  }
  if (v.spec.kind == SandboxKind::kContainer &&
      (!v.image.rootfs || v.image.rootfs_format != DiskFormat::kRaw)) {
    Fail(ErrorCode::kInvalidArgument,
         "image '{}' has no ext4 root filesystem, so it cannot run as a container", v.spec.image);
  }
  if (!v.image.takes_endpoint_key && !options_.endpoint_password) {
    Fail(ErrorCode::kFailedPrecondition,
         "image '{}' takes only the endpoint password, and none is configured "
         "(endpoint_password)",
         v.spec.image);
  }
  return v;
}

EgressPolicy Engine::DefaultEgress() const {
  return EgressPolicy{options_.outbound_nat ? EgressMode::kAll : EgressMode::kNone, {}, {}};
}

std::vector<Ipv4> Engine::GuestResolvers(const Sandbox& sandbox, const SandboxNetwork& net) const {
  // An allow-list's names resolve only through the gateway (which fills
  // the allow-list's set from its answers).
  if (sandbox.spec.egress.mode == EgressMode::kAllow) return {net.subnet.gateway()};
  return options_.dns_servers;
}

std::string Engine::NewClientToken() { return RandomString(kTokenLength, kTokenAlphabet); }

std::string Engine::AgentTokenFor(const SandboxId& id) const {
  if (options_.agent_key.empty()) return RandomString(64, "0123456789abcdef");
  return HmacSha256Hex(options_.agent_key, "agent-token:" + id.str());
}

bool Engine::UsesAgent(const Validated& v, const VmDriver& driver) const {
  // The agent sets the guest's address itself: only for the /30s the
  // daemon hands out (on a TAP, or a libvirt network of the sandbox's own
  // whose DHCP would lease the same), not a shared bridge whose DHCP picks it.
  return v.spec.kind == SandboxKind::kVm && v.image.has_agent &&
         v.image.format == ImageFormat::kKernel && driver.supports_agent() &&
         (driver.link_mode() == LinkMode::kTap || driver.link_mode() == LinkMode::kBridge);
}

void Engine::CheckFreeDisk() const {
  if (options_.disk_watch.empty() || options_.min_free_disk_mib == 0) return;
  std::error_code ec;
  auto space = std::filesystem::space(options_.disk_watch, ec);
  if (ec) return;  // cannot tell: let the create find out
  const std::uint64_t free_mib = space.available >> 20;
  if (free_mib < options_.min_free_disk_mib) {
    Fail(ErrorCode::kNoSpace,
         "the host is low on disk space: {} MiB free where sandboxes live, below the {} MiB "
         "floor (limits.min_free_disk_mib)",
         free_mib, options_.min_free_disk_mib);
  }
}

VmSpec Engine::MakeVmSpec(const Sandbox& sandbox, const Image& image, const SandboxNetwork& net,
                          LinkMode mode, const GuestSecrets& secrets) const {
  VmSpec spec(sandbox.id);
  spec.image = image;
  spec.memory_mib = sandbox.spec.memory_mib;
  spec.vcpus = sandbox.spec.vcpus;
  spec.nic = NicSpec{net.tap, net.mac, {}, {}, false};
  if (mode == LinkMode::kVeth) {
    // The driver makes the pair once the container's namespace exists.
    spec.nic->subnet = net.subnet;
  }
  if (mode == LinkMode::kBridge) {
    spec.nic->subnet = net.subnet;
    spec.nic->dns_servers = options_.dns_servers;
    spec.nic->outbound_nat = options_.outbound_nat;
  }
  if (!secrets.agent_token.empty()) {
    // The agent gets everything else in its identity message.
    spec.agent_channel = true;
    spec.guest_files = {{"opt/ephemera/agent_token", secrets.agent_token, true}};
  } else {
    if (image.takes_endpoint_key) {
      spec.guest_files = {
          {"opt/ephemera/endpoint_authorized_keys", secrets.endpoint_key.AuthorizedKeysLine()}};
    }
    if (secrets.host_key) {
      spec.guest_files.push_back(
          {"opt/ephemera/ssh_host_ed25519_key", secrets.host_key->PrivateKeyOpenSsh(), true});
    }
  }
  spec.owner = sandbox.owner;
  spec.created_at = sandbox.created_at;
  return spec;
}

namespace {

// A create the veto refused (counted apart from other permission errors).
class VetoedError : public Error {
 public:
  explicit VetoedError(const std::string& why) : Error(ErrorCode::kPermissionDenied, why) {}
};

}  // namespace

void Engine::AskVeto(const CreateRequest& request, const SandboxSpec& spec) {
  if (!create_veto_) return;
  if (auto refusal = create_veto_(request, spec)) {
    spdlog::info("create for {} refused: {}", request.owner, *refusal);
    throw VetoedError(*refusal);
  }
}

CreateResult Engine::Create(const CreateRequest& request) {
  std::string kind(KindName(request.kind.value_or(SandboxKind::kVm)));
  try {
    Validated v = Validate(request, true);
    std::optional<CreateResult> result = TakeFromPool(request, v);
    if (!result) result = CreateNew(request, std::move(v), false);
    CountCreate(*result);
    return std::move(*result);
  } catch (const VetoedError&) {
    create_failures_->Add({kind, "vetoed"});
    throw;
  } catch (const Error& e) {
    create_failures_->Add({kind, std::string(ErrorCodeName(e.code()))});
    throw;
  }
}

CreateResult Engine::CreateNew(const CreateRequest& request, Validated v, bool slot_held) {
  std::string driver_name;
  VmDriver& driver = DriverFor(v.spec.kind, &driver_name);
  // A shared bridge's traffic is its owner's to rule: ephemera enforces
  // nothing there, and says so (all) unless asked for more.
  if (!request.egress && driver.link_mode() == LinkMode::kShared) {
    v.spec.egress = EgressPolicy{EgressMode::kAll, {}, {}};
  }
  if (driver.link_mode() != LinkMode::kShared && v.spec.egress.mode != EgressMode::kNone &&
      !options_.outbound_nat) {
    Fail(ErrorCode::kFailedPrecondition,
         "egress '{}' needs outbound NAT, which this host has off (network.outbound_nat)",
         EgressModeName(v.spec.egress.mode));
  }
  CheckEgressForLink(driver.link_mode(), v.spec.egress);  // before anything is recorded
  CheckFreeDisk();
  auto t0 = Clock::now();
  Sandbox sandbox(SandboxId::Generate());
  sandbox.spec = v.spec;
  sandbox.image_sha256 = v.image.PrimarySha256();
  if (v.image.iso) sandbox.iso_path = v.image.iso->path.string();
  sandbox.owner = request.owner;
  sandbox.name = request.name;
  sandbox.driver = driver_name;
  sandbox.created_at = NowUnix();
  // A container's memory limit covers all it uses (its writes too, in
  // tmpfs); 1 MiB stands for its kernel objects, and keeps the record from
  // reading as one made before overheads were kept (0). A VM's QEMU needs more.
  sandbox.overhead_mib = 1;
  if (v.spec.kind == SandboxKind::kVm) {
    sandbox.overhead_mib = static_cast<unsigned>(options_.sandbox_overhead_mib);
    if (options_.tcg_tb_size_mib && v.image.tcg_tb_size_mib > options_.tcg_tb_size_mib) {
      sandbox.overhead_mib += v.image.tcg_tb_size_mib - options_.tcg_tb_size_mib;
    }
  }
  std::string token = NewClientToken();
  sandbox.token_sha256 = Sha256Hex(token);
  // Recorded before the host is touched, so a crash from here on is
  // reconciled; the count includes it, so the limits hold under races. The
  // row is this create's until it returns, not the reaper's.
  {
    std::lock_guard lock(bookkeeping_mutex_);
    creating_.insert(sandbox.id);
  }
  struct CreatingGuard {
    Engine* engine;
    SandboxId id;
    ~CreatingGuard() {
      std::lock_guard lock(engine->bookkeeping_mutex_);
      engine->creating_.erase(id);
    }
  } creating{this, sandbox.id};
  store_.Insert(sandbox, options_.max_sandboxes, request.owner_limit, options_.host_memory_mib,
                options_.sandbox_overhead_mib, request.owner_memory_mib);
  store_.AddEvent(event_type::kCreated, sandbox.id.str(), v.spec.image);
  LogScope log_scope(sandbox.id.str(), request.owner, "wait_for_slot");

  CreateResult result{sandbox, "", token, "", {}};
  try {
    std::optional<SlotGuard<decltype(create_slots_)>> slot;
    if (!slot_held) slot.emplace(create_slots_);
    LogScope::SetPhase("network");
    auto t1 = Clock::now();
    const LinkMode mode = driver.link_mode();
    std::optional<DerivedSubnet> derive;
    if (!v.spec.run_id.empty()) {
      if (mode == LinkMode::kShared) {
        Fail(ErrorCode::kFailedPrecondition,
             "driver {} puts sandboxes on a shared bridge whose DHCP picks the address; a run id "
             "cannot derive it",
             driver_name);
      }
      derive = DerivedSubnet{v.spec.run_id, v.spec.machine};
    }
    SandboxNetwork net = networks_.Setup(sandbox.id, derive, mode, v.spec.egress);
    sandbox.tap = net.tap;
    sandbox.mac = net.mac;
    sandbox.network = net.tap;
    if (mode != LinkMode::kShared) {
      sandbox.subnet = net.subnet.cidr();
      sandbox.guest_ip = net.subnet.guest().str();
    }
    sandbox.host_port = net.host_port;
    store_.Update(sandbox);
    result.phases.network = duration_cast<milliseconds>(Clock::now() - t1);
    LogScope::SetPhase("vm_start");

    auto t2 = Clock::now();
    GuestSecrets secrets{SshKeyPair::Generate(), std::nullopt, ""};
    // Images that take the endpoint key read their host key from the same
    // place (guest-credentials.sh): made here, the daemon knows what to
    // expect, and the guest skips ssh-keygen on its way to sshd. The agent
    // gets it in its identity message.
    const bool through_agent = UsesAgent(v, driver);
    if ((v.image.takes_endpoint_key && driver.passes_secret_files()) || through_agent) {
      secrets.host_key = SshKeyPair::Generate();
    }
    if (through_agent) secrets.agent_token = AgentTokenFor(sandbox.id);
    VmSpec vm_spec = MakeVmSpec(sandbox, v.image, net, mode, secrets);
    std::optional<VmInfo> restored;
    if (through_agent) restored = StartFromSnapshot(driver, vm_spec, v);
    VmInfo vm = restored ? std::move(*restored) : driver.Start(vm_spec);
    if (restored) result.phases.start = "snapshot";
    if (!vm.network.empty()) sandbox.network = vm.network;
    if (mode == LinkMode::kShared) {
      // The shared bridge's DHCP picks the address; the forward follows it.
      Ipv4 address = driver.WaitForAddress(sandbox.id, options_.sshd_timeout);
      sandbox.guest_ip = address.str();
      sandbox.host_port = networks_.SetGuestAddress(sandbox.id, address);
    }
    store_.Update(sandbox);
    result.phases.vm_start = duration_cast<milliseconds>(Clock::now() - t2);
    store_.Transition(sandbox.id, SandboxState::kProvisioning);
    LogScope::SetPhase("provision");

    ProvisionResult provisioned;
    std::shared_ptr<const SshKeyPair> exec_key;
    try {
      if (through_agent) {
        AgentProvisionRequest provision;
        provision.socket = vm.agent_socket;
        provision.token = secrets.agent_token;
        if (restored) {
          // The template's agent: it takes the sandbox's own token with the identity.
          provision.token = TemplateAgentToken(v);
          provision.new_token = secrets.agent_token;
        }
        provision.host_key = &*secrets.host_key;
        provision.hostname = "sandbox-" + sandbox.id.ShortName();
        provision.host = sandbox.guest_ip;
        provision.port = net.guest_port;
        provision.ssh_port = net.guest_port;
        // The resolvers the daemon's DHCP would offer.
        provision.network = GuestNetwork{net.mac, net.subnet, GuestResolvers(sandbox, net)};
        provision.authorized_keys = request.authorized_keys;
        provision.boot_timeout = options_.sshd_timeout;
        provision.setup_timeout = options_.sshd_timeout;  // a host busy with many creates
        // A clone's agent runs already: one that does not answer soon never will.
        if (restored) provision.boot_timeout = std::min(options_.sshd_timeout, kCloneAgentTimeout);
        try {
          provisioned = provisioner_.RunAgent(provision);
        } catch (const Error& e) {
          if (!restored) throw;
          // A clone that restored but did not take its identity: its
          // template is at fault. This sandbox boots instead.
          SnapshotFailed(driver, vm_spec, v, e.what());
          driver.Destroy(sandbox.id);
          restored.reset();
          result.phases.start = "boot";
          vm = driver.Start(vm_spec);
          provision.socket = vm.agent_socket;
          provision.token = secrets.agent_token;
          provision.new_token.clear();
          provisioned = provisioner_.RunAgent(provision);
        }
      } else {
        ProvisionRequest provision;
        provision.host = sandbox.guest_ip;
        provision.port = net.guest_port;
        provision.client_port = net.guest_port;
        if (v.image.takes_endpoint_key) provision.endpoint.key = &secrets.endpoint_key;
        if (secrets.host_key) provision.expected_host_key = secrets.host_key->PublicKeyLine();
        provision.endpoint.password = options_.endpoint_password;
        provision.sshd_timeout = options_.sshd_timeout;
        provision.authorized_keys = request.authorized_keys;
        // Without an agent, the daemon's own way in for exec and files:
        // a key of its own for the client account, held in memory only.
        if (v.spec.kind == SandboxKind::kVm) {
          exec_key = std::make_shared<const SshKeyPair>(SshKeyPair::Generate());
          provision.authorized_keys.push_back(exec_key->PublicKeyLine() + " ephemera-daemon");
        }
        provisioned = provisioner_.Run(provision);
      }
    } catch (const Error& e) {
      // The console usually says why a guest never became reachable.
      spdlog::warn("sandbox {}: provisioning failed; guest console ends with: {}", sandbox.id.str(),
                   EscapeForLog(ConsoleTail(vm.serial_log, 30)));
      throw;
    }
    result.phases.sshd_up = provisioned.sshd_wait;
    result.phases.provision = provisioned.setup;

    if (exec_key) {
      std::lock_guard lock(agent_links_mutex_);
      ssh_channels_[sandbox.id] =
          std::make_shared<SshChannel>(SshTarget{.host = sandbox.guest_ip,
                                                 .port = net.guest_port,
                                                 .user = provisioned.credentials.username,
                                                 .key = exec_key,
                                                 .host_key = provisioned.host_key});
    }
    sandbox.username = provisioned.credentials.username;
    sandbox.host_key_fingerprint = provisioned.host_key_fingerprint;
    sandbox.host_key = provisioned.host_key;
    sandbox.expires_at = NowUnix() + v.spec.ttl->count();
    store_.Update(sandbox);
    sandbox = store_.Transition(sandbox.id, SandboxState::kReady);
    result.password = provisioned.credentials.password;
    result.host_key = provisioned.host_key;
  } catch (const Error& e) {
    Rollback(sandbox.id, driver, e.what(), e.code());
    throw;
  } catch (const std::exception& e) {
    Rollback(sandbox.id, driver, e.what(), ErrorCode::kInternal);
    Fail(ErrorCode::kInternal, "create failed: {}", e.what());
  }
  result.sandbox = sandbox;
  result.phases.total = duration_cast<milliseconds>(Clock::now() - t0);
  store_.AddEvent(event_type::kReady, sandbox.id.str(),
                  fmt::format("{} ms ({})", result.phases.total.count(), result.phases.start));
  spdlog::info(
      "sandbox {}: ready in {} ms from {} (network {} ms, vm {} ms, sshd {} ms, provision {} ms)",
      sandbox.id.str(), result.phases.total.count(), result.phases.start,
      result.phases.network.count(), result.phases.vm_start.count(), result.phases.sshd_up.count(),
      result.phases.provision.count());
  return result;
}

void Engine::Rollback(const SandboxId& id, VmDriver& driver, const std::string& reason,
                      ErrorCode code) {
  LogScope::SetPhase("rollback");
  spdlog::warn("sandbox {}: create failed, rolling back: {}", id.str(), reason);
  try {
    TearDownHost(id, driver);
  } catch (const Error& e) {
    // Marked failed, the reaper retries the teardown; if even that cannot be
    // written, the row stays creating or provisioning, which the reaper (and
    // reconcile after a crash) also destroys once this create has returned.
    spdlog::error("sandbox {}: rollback incomplete: {}", id.str(), e.what());
    try {
      store_.Transition(id, SandboxState::kFailed, reason);
    } catch (const Error& again) {
      spdlog::error("sandbox {}: cannot mark it failed: {}", id.str(), again.what());
    }
    return;
  }
  ForgetRecord(id, event_type::kFailed, reason, std::string(ErrorCodeName(code)));
}

}  // namespace ephemera

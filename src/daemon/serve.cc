#include "daemon/serve.h"
#include "core/event_types.h"

#include <signal.h>
#include <sys/file.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <optional>

#include <spdlog/spdlog.h>

#include "api/http_server.h"
#include "api/ip_filter.h"
#include "api/router.h"
#include "container/container_driver.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/random.h"
#include "daemon/hooks.h"
#include "daemon/remote_doors.h"
#include "engine/engine.h"
#include "guest/provisioner.h"
#include "image/image.h"
#include "net/network_manager.h"
#include "store/store.h"
#include "vm/libvirt/libvirt_driver.h"
#include "vm/qemu/host.h"
#include "vm/qemu/qemu_driver.h"
#include "wirt/members.h"
#include "wirt/service.h"

namespace ephemera {

namespace {

// A 32-byte secret kept in `path` (0600), made on first start. A file that
// is there but not 32 bytes is an error, never silently replaced: what was
// derived from it would no longer match.
std::string LoadOrMakeSecret(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::string secret = ReadFile(path);
    if (secret.size() != 32) {
      Fail(ErrorCode::kFailedPrecondition, "{} is {} bytes, not 32: restore it or remove it",
           path.string(), secret.size());
    }
    return secret;
  }
  std::string secret(32, '\0');
  FillRandom(std::as_writable_bytes(std::span(secret.data(), secret.size())));
  WriteFileAtomic(path, secret, 0600);
  return secret;
}

constexpr char kVersion[] = "0.1.0";

EngineOptions EngineOptionsFrom(const Config& c, const AccelChoice& accel) {
  EngineOptions o;
  o.host_memory_mib =
      c.limits.host_memory_mib != 0 ? c.limits.host_memory_mib : HostMemoryMib() * 9 / 10;
  o.tcg_tb_size_mib = accel.accel == Accel::kTcg ? c.vm.tcg_tb_size_mib : 0;
  o.sandbox_overhead_mib = c.vm.memory_overhead_mib + o.tcg_tb_size_mib;
  o.disk_watch = c.state_dir;
  o.min_free_disk_mib = c.limits.min_free_disk_mib;
  o.max_paused = std::chrono::seconds(c.limits.max_paused_seconds);
  o.max_paused_per_owner = c.limits.max_paused_per_owner;
  o.max_exposed_ports = c.limits.max_exposed_ports;
  // SSH's forward and the exposed ones share the range: said at start when
  // full sandboxes could use it up (creates would then fail for want of a
  // port).
  const std::uint64_t range = c.network.forward_port_last - c.network.forward_port_first + 1u;
  const std::uint64_t wanted =
      std::uint64_t{c.limits.max_sandboxes} * (1u + c.limits.max_exposed_ports);
  if (wanted > range) {
    spdlog::warn(
        "network.forward_ports has {} ports; {} sandboxes with {} exposed ports each could want "
        "{} (limits.max_sandboxes, limits.max_exposed_ports)",
        range, c.limits.max_sandboxes, c.limits.max_exposed_ports, wanted);
  }
  for (const PoolEntry& p : c.pools) o.pools.push_back({p.image, p.memory_mib, p.vcpus, p.size});
  o.snapshots = c.vm.snapshots;
  o.per_sandbox_metrics = c.metrics.per_sandbox;
  o.dns_servers = c.network.dns_servers;
  o.outbound_nat = c.network.outbound_nat;
  o.max_sandboxes = c.limits.max_sandboxes;
  o.max_parallel_creates = c.limits.max_parallel_creates;
  o.default_ttl = std::chrono::seconds(c.limits.default_ttl_seconds);
  o.max_ttl = std::chrono::seconds(c.limits.max_ttl_seconds);
  o.default_idle_timeout = std::chrono::seconds(c.limits.default_idle_timeout_seconds);
  o.default_memory_mib = c.defaults.memory_mib;
  o.max_memory_mib = c.limits.max_memory_mib;
  o.default_vcpus = c.defaults.vcpus;
  o.max_vcpus = c.limits.max_vcpus;
  o.default_image = c.defaults.image;
  o.sshd_timeout = std::chrono::seconds(c.limits.sshd_timeout_seconds);
  if (!c.endpoint_password.empty()) o.endpoint_password = c.endpoint_password;
  for (const RegistryEntry& r : c.registries) {
    o.registry.registries.push_back({r.host, r.insecure, r.ca_file, r.credentials_file});
  }
  o.registry.connect_timeout = std::chrono::seconds(c.pull.connect_timeout_seconds);
  o.registry.stall_timeout = std::chrono::seconds(c.pull.stall_timeout_seconds);
  if (c.pull.cache_max_mib) o.image_cache_max_mib = c.pull.cache_max_mib;
  for (const auto& [name, source] : c.images) {
    const std::string key = "images." + name;
    if (!IsValidImageName(name)) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' is not a valid image name", key,
           name.substr(0, 80));
    }
    auto parse = [&](const std::string& field, const std::string& text) {
      try {
        return oci::ImageReference::Parse(text);
      } catch (const Error& e) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("config key '{}.{}': {}", key, field, e.what()));
      }
    };
    std::optional<oci::ImageReference> kernel;
    if (!source.kernel.empty()) kernel = parse("kernel", source.kernel);
    o.configured_images[name] = {kernel, parse("rootfs", source.rootfs), source.headroom_mib};
  }
  return o;
}

// Forwarded SSH ports are a front door too: remote.deny applies to them.
std::function<bool(Ipv4)> ForwardedPortAdmission(const Config& c) {
  if (c.remote.deny.empty()) return {};
  auto filter = std::make_shared<IpFilter>(std::vector<std::string>{}, c.remote.deny);
  return [filter](Ipv4 source) {
    return filter->Admits(boost::asio::ip::make_address_v4(source.value));
  };
}

std::string ClientHost(const Config& c) {
  if (!c.client_host.empty()) return c.client_host;
  if (c.network.forward_address != "0.0.0.0") return c.network.forward_address;
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

wirt::ServiceOptions WirtOptionsFrom(const Config& c) {
  wirt::ServiceOptions o;
  o.group = c.wirt.group;
  o.client_host = ClientHost(c);
  // 0: no limit of its own (the daemon's limits still hold).
  o.max_sandboxes_per_user = std::nullopt;
  o.max_memory_mib_per_user = std::nullopt;
  if (c.wirt.max_sandboxes_per_user) o.max_sandboxes_per_user = c.wirt.max_sandboxes_per_user;
  if (c.wirt.max_memory_mib_per_user) o.max_memory_mib_per_user = c.wirt.max_memory_mib_per_user;
  o.log_max_bytes = c.wirt.log_max_bytes;
  o.log_keep = c.wirt.log_keep;
  o.history_keep = c.wirt.history_keep;
  o.workers = c.wirt.workers;
  o.mail = c.wirt.mail;
  o.sendmail = c.wirt.sendmail;
  return o;
}

// The local socket's group (see Config::socket_group); none leaves the
// socket to root.
struct SocketGroup {
  std::string name;
  gid_t gid = 0;
};
constexpr char kPackageSocketGroup[] = "ephemera";
std::optional<SocketGroup> LocalSocketGroup(const Config& c, const wirt::Service* wirt) {
  if (!c.socket_group.empty()) {
    auto gid = wirt::GroupId(c.socket_group);
    if (!gid) {
      Fail(ErrorCode::kInvalidArgument, "config key 'socket_group': there is no group '{}'",
           c.socket_group);
    }
    return SocketGroup{c.socket_group, *gid};
  }
  if (wirt) return SocketGroup{c.wirt.group, wirt->gid()};
  if (auto gid = wirt::GroupId(kPackageSocketGroup)) return SocketGroup{kPackageSocketGroup, *gid};
  return std::nullopt;
}

// Who a non-root process on the local socket is: a member of the socket's
// group acts as "uid:N" within the per-user limits.
void ServeLocalUsers(const Config& c, const SocketGroup& group, ApiContext& context) {
  Caller limits;
  if (c.wirt.max_sandboxes_per_user) limits.owner_limit = c.wirt.max_sandboxes_per_user;
  if (c.wirt.max_memory_mib_per_user) limits.owner_memory_mib = c.wirt.max_memory_mib_per_user;
  limits.local_user = true;
  context.local_user = [group, limits](std::uint32_t uid) {
    if (!wirt::MemberByUid(uid, group.gid)) {
      Fail(ErrorCode::kPermissionDenied, "uid {} is not a member of group {}", uid, group.name);
    }
    Caller caller = limits;
    caller.owner = UserOwner(uid);
    return caller;
  };
}

// One daemon, or one cleanup, per state folder: a lock held for the
// process's life (closed on exec, so sandboxes never hold it).
UniqueFd LockStateFolder(const std::filesystem::path& state_dir) {
  UniqueFd lock = OpenFile(state_dir / "daemon.lock", O_RDWR | O_CREAT, 0600);
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      Fail(ErrorCode::kAlreadyExists, "another ephemerad (or its cleanup) uses {}: stop it first",
           state_dir.string());
    }
    FailErrno("cannot lock " + (state_dir / "daemon.lock").string(), errno);
  }
  return lock;
}

// The cgroups sandboxes get. A serving daemon finds (and delegates) its
// own and records where; cleanup uses that record and never moves itself.
std::shared_ptr<Cgroups> SandboxCgroups(const Config& c, ServeMode mode) {
  const std::filesystem::path record = c.state_dir / "cgroups";
  if (mode == ServeMode::kCleanup) return std::make_shared<Cgroups>(Cgroups::FromRecord(record));
  auto cgroups = std::make_shared<Cgroups>(Cgroups::Discover(Cgroups::SubtreeFor(c.state_dir)));
  cgroups->Record(record);
  return cgroups;
}

}  // namespace

int Serve(const Config& given, ServeMode mode) {
  Config config = given;
  // Cleanup: wirt's instances are sandboxes like the others.
  if (mode == ServeMode::kCleanup) config.wirt.enabled = false;
  // Signals are taken synchronously by this thread; every other thread
  // (created below) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  MakeDirs(config.state_dir, 0700);
  const UniqueFd state_lock = LockStateFolder(config.state_dir);
  AccelChoice accel = ChooseAccel(config.vm.accel, ProbeKvm());
  spdlog::info("accelerator: {} ({})", AccelName(accel.accel), accel.reason);
  Store store(config.state_dir / "ephemera.db");
  ImageCatalog images(config.image_dir);
  // Digest the default image now (once per file version), not in the first create.
  if (mode == ServeMode::kServe) {
    try {
      Image image = images.Get(config.defaults.image);
      spdlog::info("default image '{}' version {} sha256 {}", image.name, image.version,
                   image.PrimarySha256());
    } catch (const Error& e) {
      spdlog::warn("default image: {}", e.what());
    }
  }
  auto cgroups = SandboxCgroups(config, mode);
  spdlog::info("cgroups: {} sandboxes under {}", cgroups->unified() ? "v2," : "v1,",
               cgroups->bases().empty() ? "-" : cgroups->bases().front().string());
  QemuDriver vms({config.state_dir, config.vm, accel, cgroups});
  NetworkManager networks(config.state_dir, config.network, ForwardedPortAdmission(config));
  GuestProvisioner provisioner;
  EngineDrivers drivers;
  drivers.by_name["qemu"] = &vms;
  drivers.vm = "qemu";
  std::unique_ptr<LibvirtDriver> libvirt;
  if (config.vm.driver == "libvirt") {
    libvirt = std::make_unique<LibvirtDriver>(
        LibvirtDriverOptions{config.state_dir, config.vm, accel, config.network.bridge});
    drivers.by_name["libvirt"] = libvirt.get();
    drivers.vm = "libvirt";
  }
  std::unique_ptr<ContainerDriver> containers;
  if (config.container.enabled) {
    try {
      containers = std::make_unique<ContainerDriver>(
          ContainerDriverOptions{config.state_dir, config.container, config.limits.max_sandboxes,
                                 cgroups, std::size_t{config.vm.console_log_kib} * 1024});
      drivers.by_name["container"] = containers.get();
      drivers.container = "container";
    } catch (const Error& e) {
      // VMs still work; a create of a container says containers are off.
      spdlog::warn("containers are off: {}", e.what());
    }
  }
  EngineOptions engine_options = EngineOptionsFrom(config, accel);
  engine_options.agent_key = LoadOrMakeSecret(config.state_dir / "agent.key");
  Engine engine(engine_options, store, images, drivers, networks, provisioner);
  // Hooks hear every event from here on (reconcile's too); the feed holds
  // them as long as it may publish.
  auto hooks = std::make_shared<Hooks>(config.hooks, &engine.metrics());
  store.feed().AddListener([hooks](const Event& event) { hooks->OnEvent(event); });
  // On every way out, before the engine (whose registry they count in) goes.
  struct HooksStop {
    std::shared_ptr<Hooks> hooks;
    ~HooksStop() { hooks->Stop(); }
  } hooks_stop{hooks};
  if (hooks->has_before_create()) {
    engine.SetCreateVeto([hooks](const CreateRequest& request, const SandboxSpec& spec) {
      return hooks->BeforeCreate(request, spec);
    });
  }
  // The file front door: made (and its instances adopted) before reconcile,
  // so that it hears of every instance that ends from then on.
  wirt::EngineBackend wirt_backend(engine);
  // Shared with the listener: the engine's reaper may outlive this scope's
  // pointer by a moment (a stopped Service ignores what it hears).
  std::shared_ptr<wirt::Service> wirt;
  if (config.wirt.enabled) {
    wirt = std::make_shared<wirt::Service>(WirtOptionsFrom(config), wirt_backend);
    engine.SetSandboxGoneListener(
        [wirt](const Sandbox& gone, const std::string& why) { wirt->OnSandboxGone(gone, why); });
  }

  // Before anything is adopted: a socket_group that does not exist stops here.
  std::optional<SocketGroup> socket_group;
  if (mode == ServeMode::kServe) socket_group = LocalSocketGroup(config, wirt.get());

  // Adopted first: reconcile then reports the instances that died meanwhile.
  if (wirt) wirt->Adopt();
  ReconcileReport report = engine.Reconcile();
  spdlog::info("reconcile: {} action(s)", report.actions.size());
  if (mode == ServeMode::kCleanup) {
    const std::size_t failed = engine.DestroyAll("ephemerad cleanup");
    const std::size_t left = store.List().size();
    store.AddEvent(event_type::kDaemonStopped, "", "cleanup");
    if (failed > 0 || left > 0) {
      // Their networks stay with them: nothing of a sandbox goes half-way.
      spdlog::error("cleanup: {} sandbox(es) could not be destroyed (above); {} left", failed,
                    left);
      return 1;
    }
    networks.TeardownAll();
    spdlog::info("cleanup: every sandbox is gone");
    return 0;
  }
  engine.StartReaper();
  engine.StartPool();
  store.AddEvent(event_type::kDaemonStarted, "", kVersion);
  if (wirt) {
    wirt->Start();
    spdlog::info("wirt: watching the trees of group {}'s members ({} folders)", config.wirt.group,
                 wirt->Watches());
  }

  FrontDoors front_doors;
  ApiContext context{&engine,  ClientHost(config),
                     kVersion, fmt::format("{} ({})", AccelName(accel.accel), accel.reason),
                     nullptr,  &front_doors};
  StreamSlots event_streams(config.events.max_subscribers);
  context.event_streams = &event_streams;
  context.requests = &RegisterRequestMetrics(engine.metrics());
  HttpListener local_listener = HttpListener::Unix(config.socket, config.socket_mode);
  if (socket_group) {
    // Members of the group reach the local socket and act as themselves.
    ServeLocalUsers(config, *socket_group, context);
    local_listener.socket_group = socket_group->gid;
    spdlog::info("local socket: root and group {}'s members", socket_group->name);
  }
  auto remote = std::make_unique<RemoteDoors>(config, engine, context, front_doors);
  HttpServerOptions local_options;
  local_options.is_slow = IsSlowApiRequest;
  // Event streams hold a slow worker each for as long as they follow:
  // creates and execs keep the usual number besides.
  local_options.slow_workers += config.events.max_subscribers;
  local_options.streams_body = StreamsApiRequestBody;
  auto server = std::make_unique<HttpServer>(
      local_listener, local_options,
      HttpStreamingHandler([&context](const HttpRequest& r, const Peer& p, HttpChunkSink& sink) {
        return HandleApiRequest(context, r, p, &sink);
      }));
  spdlog::info("listening on {} (images in {}, state in {})", config.socket.string(),
               config.image_dir.string(), config.state_dir.string());
  sd_notify(0, "READY=1\nSTATUS=serving");

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, stopping", strsignal(sig));
  sd_notify(0, "STOPPING=1");
  // No request may start a sandbox while they are being destroyed: close
  // the doors first (each finishes the requests it is serving; event
  // streams end).
  store.feed().Close();
  server.reset();
  remote.reset();
  if (wirt) wirt->Stop();
  engine.StopPool();  // its members' passwords end with this process
  if (config.destroy_on_exit) {
    engine.DestroyAll("the daemon stopped (destroy_on_exit)");
    networks.TeardownAll();
  } else {
    spdlog::info("sandboxes keep running and are adopted at the next start");
  }
  store.AddEvent(event_type::kDaemonStopped, "", strsignal(sig));
  hooks->Stop();
  return 0;
}

}  // namespace ephemera

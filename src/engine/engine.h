// The engine: the only part that knows all the others. It turns the small
// set of front-door requests (create, destroy, get, list, status) into
// pipelines over the store, image catalog, VM driver, networks and
// provisioner, and keeps the host consistent with the store: rollback on a
// failed create, a reaper for stopped or expired sandboxes, reconcile at
// startup. Split by job: create.cc, destroy.cc, reaper.cc, reconcile.cc.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/event_types.h"
#include "core/metrics.h"
#include "core/sandbox.h"
#include "engine/guest_exec.h"
#include "guest/agent_link.h"
#include "guest/provisioner.h"
#include "guest/ssh_channel.h"
#include "image/catalog.h"
#include "image/oci/importer.h"
#include "net/network_manager.h"
#include "store/store.h"
#include "vm/driver.h"

namespace ephemera {

// The drivers an engine runs sandboxes with, by name (each sandbox records
// its own), and which one a new sandbox of each kind gets.
struct EngineDrivers {
  std::map<std::string, VmDriver*> by_name;
  std::string vm = "qemu";
  std::string container;  // none: containers are refused
};

struct ConfiguredImage {
  std::optional<oci::ImageReference> kernel;  // none: the rootfs's own
  oci::ImageReference rootfs;
  std::uint64_t headroom_mib = 1024;
};

// A warm pool: this many sandboxes of one image and size kept booted and
// provisioned ahead of demand (`pool:` in the configuration).
struct PoolSpec {
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::size_t size = 1;
};

struct PoolStatus {
  PoolSpec spec;
  std::size_t ready = 0;
  std::uint64_t hits = 0, misses = 0;
};

// A snapshot template (EngineOptions::snapshots), by image and size.
struct SnapshotStatus {
  std::string image;
  unsigned memory_mib = 0;
  unsigned vcpus = 0;
  std::string state;            // "building", "ready", "failed" (no more tries)
  std::uint64_t restores = 0;   // creates that started from it
  std::uint64_t fallbacks = 0;  // restores that failed and booted cold instead
};

// The owner of warm pool members until they are handed out.
inline constexpr std::string_view kPoolOwner = "pool";

struct EngineOptions {
  std::size_t max_sandboxes = 16;
  std::size_t max_parallel_creates = 4;
  std::chrono::seconds default_ttl{3600};
  std::chrono::seconds max_ttl{86400};
  // A create's idle timeout when it names none (0: none); idle_timeout.cc.
  std::chrono::seconds default_idle_timeout{0};
  unsigned default_memory_mib = 256;
  unsigned max_memory_mib = 4096;
  unsigned default_vcpus = 1;
  unsigned max_vcpus = 4;
  std::string default_image = "default";
  std::chrono::milliseconds sshd_timeout{120000};
  std::optional<std::string> endpoint_password;  // for images without key injection
  std::chrono::milliseconds reaper_interval{500};
  std::chrono::milliseconds graceful_shutdown_timeout{30000};
  // All sandboxes together may commit this much memory (each its
  // memory_mib plus the overhead); none: unbounded.
  std::optional<std::uint64_t> host_memory_mib;
  std::uint64_t sandbox_overhead_mib = 0;
  // Under TCG, the translation cache sandbox_overhead_mib includes (0 under
  // KVM): an image that needs more (Image::tcg_tb_size_mib) adds the rest.
  unsigned tcg_tb_size_mib = 0;
  // Creates are refused (kNoSpace) while this folder has less free.
  std::filesystem::path disk_watch;
  std::uint64_t min_free_disk_mib = 0;
  // For drivers whose bridge serves DHCP itself (LinkMode::kBridge).
  std::vector<Ipv4> dns_servers;
  bool outbound_nat = false;
  // Pulls of docker:// references.
  oci::RegistryOptions registry;
  // `image prune` leaves registry blobs younger than this (a pull under way).
  std::chrono::seconds blob_min_age{3600};
  // What the image directory may take (none: unbounded); see image_cache.cc.
  std::optional<std::uint64_t> image_cache_max_mib;
  // Images by their references (`images:`), imported on demand.
  std::map<std::string, ConfiguredImage> configured_images;
  // The daemon's secret from which each sandbox's guest agent token is
  // derived (HMAC-SHA256 of its id), so the daemon can speak to an agent
  // again without storing a token; empty: random tokens, used once.
  std::string agent_key;
  // Paused sandboxes: destroyed after this long paused; per caller at once.
  std::chrono::seconds max_paused{86400};
  std::size_t max_paused_per_owner = 4;
  // Guest ports a sandbox may expose on host ports besides SSH's.
  std::size_t max_exposed_ports = 16;
  std::vector<PoolSpec> pools;
  // /metrics shows each sandbox's CPU, memory and network bytes.
  bool per_sandbox_metrics = true;
  // Creates of agent images start from snapshot templates (the qemu driver),
  // each made in the background by the first create of its image and size.
  bool snapshots = false;
};

struct CreatePhases {
  std::chrono::milliseconds network{0};
  std::chrono::milliseconds vm_start{0};  // clone + QEMU launch
  std::chrono::milliseconds sshd_up{0};   // boot until sshd answers
  std::chrono::milliseconds provision{0};
  std::chrono::milliseconds total{0};
  // How the sandbox started: "boot", "snapshot" (restored), "pool" (handed out).
  std::string start = "boot";
};

struct CreateRequest {
  std::optional<SandboxKind> kind;
  std::optional<std::string> image;
  // Instead of an image: a kernel and a rootfs image reference (or a rootfs
  // alone, booting its own kernel), imported on first use as the image
  // PairImageName() names. Remote callers may give
  // only docker:// references to registries listed under registries:.
  std::optional<std::string> kernel, rootfs;
  // For pipelines: the /30 and TAP name derive from (run_id, machine);
  // both or neither, each 1 to 63 of [A-Za-z0-9_.-].
  std::optional<std::string> run_id, machine;
  std::optional<unsigned> memory_mib;
  std::optional<unsigned> vcpus;
  std::optional<std::int64_t> ttl_seconds;
  // Destroyed after this long idle (0: never; absent: default_idle_timeout),
  // at most max_ttl.
  std::optional<std::int64_t> idle_timeout_seconds;
  // Where it may connect to; absent: all with outbound NAT on, else none.
  // Anything but none needs outbound NAT (kFailedPrecondition).
  std::optional<EgressPolicy> egress;
  std::string owner = "local";
  std::optional<std::size_t> owner_limit;         // sandboxes this owner may hold at once
  std::optional<std::uint64_t> owner_memory_mib;  // guest memory this owner may hold at once
  // Unique among the owner's sandboxes (1 to 63 of [a-z0-9_.-], starting
  // with a letter or digit); empty: unnamed.
  std::string name;
  // Public keys the client may also log in with (CheckAuthorizedKey).
  std::vector<std::string> authorized_keys;
};

struct NewAccessToken {
  std::string name;
  std::optional<std::int64_t> expires_in_seconds;
  std::optional<std::int64_t> max_sandboxes;
  std::optional<std::int64_t> rate_per_minute;
};

struct IssuedAccessToken {
  AccessToken record;
  std::string secret;  // shown once; the store keeps its SHA-256
};

struct CreateResult {
  Sandbox sandbox;
  std::string password;  // shown once, never stored
  std::string token;     // shown once; the store keeps its SHA-256
  std::string host_key;  // "ssh-ed25519 AAAA..." for pinning
  CreatePhases phases;
};

// An image import as the API asks for it (references still text).
struct ImageImport {
  std::string name;
  // oci:DIR[:TAG] | docker-archive:FILE | docker://HOST/REPO[:TAG|@DIGEST];
  // both empty: the references configured for `name` under images:.
  std::string kernel;
  std::string rootfs;
  std::optional<std::int64_t> headroom_mib;
};

struct ImageDetails {
  Image image;
  std::vector<SandboxId> used_by;  // sandboxes booted from it
  std::uint64_t disk_bytes = 0;    // what its folder takes on disk (sparse files as allocated)
};

struct EngineStatus {
  std::size_t sandboxes = 0;
  std::size_t max_sandboxes = 0;
  std::int64_t uptime_seconds = 0;
  std::map<std::string, std::string> drivers;  // name -> health ("ok" or what is wrong)
  std::vector<PoolStatus> pools;
  std::vector<SnapshotStatus> snapshots;
};

struct ReconcileReport {
  std::vector<std::string> actions;  // one human-readable line each
};

// The catalog name of the image a kernel + rootfs reference pair (or a
// rootfs with its own kernel) is imported as by a create that names them:
// "pair-" and 16 hex digits.
std::string PairImageName(const std::optional<oci::ImageReference>& kernel,
                          const oci::ImageReference& rootfs);

// Why a sandbox goes, for its event and the metrics: the event type
// (destroyed, reaped, expired) and a short cause for programs.
struct Removal {
  std::string_view event = event_type::kDestroyed;
  std::string cause = "request";
};

// What a sandbox uses now, as its driver and network count it.
struct SandboxUsage {
  Sandbox sandbox;
  std::optional<ResourceUsage> resources;  // none: its driver cannot tell
  std::uint64_t received_bytes = 0;        // by the guest, through its host-side device
  std::uint64_t sent_bytes = 0;
};

// Asked before any create (a request's or a pool's hand-out) with what it
// would make: a reason refuses it (kPermissionDenied), nullopt lets it go.
using CreateVeto =
    std::function<std::optional<std::string>(const CreateRequest&, const SandboxSpec&)>;

// Holds a counting-semaphore slot for its lifetime (the engine's slots for
// heavy work: creates, pauses, resumes).
template <typename Semaphore>
class SlotGuard {
 public:
  explicit SlotGuard(Semaphore& s) : s_(s) { s_.acquire(); }
  ~SlotGuard() { s_.release(); }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;

 private:
  Semaphore& s_;
};

// kPermissionDenied unless `token` is the sandbox's client token (compared
// in constant time).
void CheckClientToken(const Sandbox& sandbox, const std::string& token);

class Engine {
 public:
  Engine(EngineOptions options, Store& store, ImageCatalog& images, EngineDrivers drivers,
         SandboxNetworks& networks, Provisioner& provisioner);
  ~Engine();  // stops the reaper; sandboxes keep running

  // kInvalidArgument for a bad request, kResourceExhausted at the limit;
  // any failure rolls back every step already taken.
  CreateResult Create(const CreateRequest& request);

  // Destroys the sandbox. With a token, the token must be the sandbox's
  // (compared in constant time; kPermissionDenied otherwise); without one
  // the caller is an administrator. Idempotent for a sandbox mid-destroy.
  // Graceful: the guest is asked to power off first (ACPI), waited for up
  // to graceful_shutdown_timeout, then stopped.
  // `still_due`, when given, is asked again once no pause, resume or
  // lifetime change is under way: a sandbox whose row no longer satisfies
  // it (extended meanwhile, paused) is kept. The reaper's.
  void Destroy(const SandboxId& id, const std::optional<std::string>& token,
               const std::string& reason = "destroyed by request", bool graceful = false,
               const std::function<bool(const Sandbox&)>& still_due = {},
               const Removal& removal = {});

  // Saves a ready sandbox's whole state to disk and ends its VM, freeing
  // its host memory; its time to live stops until Resume, and it is
  // destroyed after max_paused paused. The token as Destroy's. A failed
  // pause leaves it running, and the error says why (kNoSpace: a full
  // disk). kFailedPrecondition when it is not ready or its driver cannot,
  // kResourceExhausted past max_paused_per_owner.
  Sandbox Pause(const SandboxId& id, const std::optional<std::string>& token);
  // Restores a paused sandbox where it stopped, with its disk, address and
  // credentials; its time to live goes on. kResourceExhausted when the
  // host's memory budget has no room for it now (it stays paused).
  Sandbox Resume(const SandboxId& id, const std::optional<std::string>& token);

  // Sets the time a ready or paused sandbox has left to `ttl_seconds` from
  // now (default_ttl without one), within [1, max_ttl]: longer or shorter
  // than before. A paused sandbox keeps it for when it resumes. The token
  // as Destroy's. kFailedPrecondition while it is made, moved or destroyed.
  Sandbox SetTimeToLive(const SandboxId& id, std::optional<std::int64_t> ttl_seconds,
                        const std::optional<std::string>& token);

  // Forwards a host port (from the forward range) to `guest_port` of a
  // ready or paused sandbox, until it is unexposed or the sandbox goes;
  // returns it. The token as Destroy's. kInvalidArgument for port 0,
  // kAlreadyExists for a port exposed already (SSH's included: it is
  // forwarded from the start), kFailedPrecondition past max_exposed_ports
  // (and for closing SSH's).
  ExposedPort ExposePort(const SandboxId& id, std::uint16_t guest_port,
                         const std::optional<std::string>& token);
  void UnexposePort(const SandboxId& id, std::uint16_t guest_port,
                    const std::optional<std::string>& token);
  // Its forwarded ports, SSH's first. kNotFound for an unknown sandbox.
  std::vector<ExposedPort> ExposedPorts(const SandboxId& id,
                                        const std::optional<std::string>& token);

  // Programs and files in a ready sandbox's guest, through its guest
  // agent (exec.cc); the token as Destroy's. kFailedPrecondition when the
  // sandbox is not ready or its guest has no agent that speaks streams.
  // A process ends when its stream is dropped before its end.
  std::shared_ptr<GuestExec> StartExec(const SandboxId& id, const ExecRequest& request,
                                       const std::optional<std::string>& token);
  // A running process of the sandbox; kNotFound when it ended or is another's.
  std::shared_ptr<GuestExec> FindExec(const SandboxId& id, const std::string& exec_id,
                                      const std::optional<std::string>& token);
  // A file's bytes, or a folder as tar; kNotFound for a path the guest has not.
  GuestDownload Download(const SandboxId& id, const std::string& path,
                         const std::optional<std::string>& token);
  // Write the bytes (or the tar) to the stream, then CloseInput; its end says
  // whether all is in place.
  std::shared_ptr<GuestStream> Upload(const SandboxId& id, const GuestUpload& upload,
                                      const std::optional<std::string>& token);

  std::optional<Sandbox> Get(const SandboxId& id);
  // Get for the holder of the sandbox's client token: kNotFound, or
  // kPermissionDenied when the token does not match (compared in constant time).
  Sandbox GetWithToken(const SandboxId& id, const std::string& token);
  std::vector<Sandbox> List();  // as Get: with whether each runs now
  // Its driver's description of it (libvirt's domain XML); empty if none.
  std::string DescribeXml(const Sandbox& sandbox);
  // The image catalog, every image loaded and checked (what `image list` shows).
  std::vector<ImageCatalog::Entry> Images();
  // Imports a kernel + rootfs pair of OCI images into the catalog (see
  // image/oci/importer.h); `progress` hears of registry transfers.
  oci::ImportResult ImportImage(const ImageImport& import,
                                const oci::PullProgressFn& progress = {});
  // One image, loaded and checked, with what uses it; kNotFound.
  ImageDetails InspectImage(const std::string& name);
  // Never while a sandbox boots from it: kFailedPrecondition naming one.
  void RemoveImage(const std::string& name);
  // Removes image folders no name points at and no sandbox boots from.
  std::vector<std::string> PruneImages();
  EngineStatus Status();
  // Sandboxes whose host side is gone but whose record could not yet be
  // removed (a full disk); the reaper retries them.
  std::size_t PendingRecordRemovals();

  // Access tokens for the remote front doors (access_tokens.cc).
  IssuedAccessToken AddAccessToken(const NewAccessToken& request);
  std::vector<AccessToken> ListAccessTokens();
  AccessToken SetAccessTokenEnabled(const std::string& id, bool enabled);  // kNotFound
  void DeleteAccessToken(const std::string& id);                           // kNotFound
  // The enabled, unexpired token with this secret; kUnauthenticated saying
  // which of unknown, disabled or expired it is otherwise.
  AccessToken Authenticate(std::string_view secret);

  // Brings the host and the store into agreement (call once at startup).
  ReconcileReport Reconcile();
  // One reaper pass (the reaper thread calls this every reaper_interval).
  void ReapOnce();
  void StartReaper();
  // Starts filling the warm pools in the background (after Reconcile,
  // which destroys the members a previous daemon left: their credentials
  // died with it). StopPool ends that and destroys the members.
  void StartPool();
  void StopPool();
  // Destroys every sandbox (for destroy_on_exit and cleanup); returns how
  // many could not be destroyed (each is logged).
  std::size_t DestroyAll(const std::string& reason);

  // The wirt VMs kept running (autostart), by owner uid and VM name.
  void SetAutostart(std::uint32_t uid, const std::string& name, bool on) {
    store_.SetAutostart(uid, name, on);
  }
  std::vector<std::pair<std::uint32_t, std::string>> ListAutostart() {
    return store_.ListAutostart();
  }

  // Told of each sandbox whose record is removed (destroyed, reaped,
  // rolled back), after the fact, on the thread that removed it: keep it
  // short and do not call back into the engine from it. Set before
  // StartReaper.
  using SandboxGoneListener = std::function<void(const Sandbox& gone, const std::string& why)>;
  void SetSandboxGoneListener(SandboxGoneListener listener) {
    gone_listener_ = std::move(listener);
  }

  static constexpr std::size_t kTokenLength = 255;

  // Set before the front doors open.
  void SetCreateVeto(CreateVeto veto) { create_veto_ = std::move(veto); }

  // The event log after `after_seq`, oldest first; and its new entries as
  // they are added.
  std::vector<Event> Events(std::int64_t after_seq, std::size_t limit) {
    return store_.Events(after_seq, limit);
  }
  std::unique_ptr<EventFeed::Subscription> FollowEvents() { return store_.feed().Subscribe(); }

  // Each ready or paused sandbox (of `owner`, when given) with what it uses now.
  std::vector<SandboxUsage> Usage(const std::optional<std::string>& owner = std::nullopt);
  // The engine's counters and gauges; the front doors add theirs (metrics.cc).
  MetricsRegistry& metrics() { return metrics_; }

 private:
  struct Validated {
    Image image;
    SandboxSpec spec;
  };
  // `ask_veto`: a caller's create, which the veto (SetCreateVeto) is asked
  // about once the request is checked and before any image is pulled.
  Validated Validate(const CreateRequest& request, bool ask_veto = false);
  void AskVeto(const CreateRequest& request, const SandboxSpec& spec);
  // The image a create names, imported first when it is configured by its
  // references (images:) or given as a kernel + rootfs pair.
  std::string ResolveImage(const CreateRequest& request);
  void ImportForCreate(const ImageImport& import, const std::string& owner);
  // Brings the image directory under image_cache_max_mib: what prune
  // removes, then images a create could import again that no sandbox uses,
  // least recently used first, never `keep`. Returns the bytes it takes.
  std::uint64_t EnforceImageCacheLimit(const std::string& keep);
  // Marks an image used now (the cache evicts the least recently used).
  void TouchImage(const std::string& name);
  void Rollback(const SandboxId& id, VmDriver& driver, const std::string& reason, ErrorCode code);
  void TearDownHost(const SandboxId& id, VmDriver& driver);
  // The driver a sandbox was made with; kUnavailable if this daemon does
  // not run it (any more).
  VmDriver& DriverOf(const Sandbox& sandbox);
  VmDriver& DriverFor(SandboxKind kind, std::string* name);
  void FillRunning(Sandbox& sandbox);
  std::vector<Sandbox> ListRecorded();  // List without asking the drivers
  // What a new guest is handed before boot, made per sandbox, never stored.
  struct GuestSecrets {
    SshKeyPair endpoint_key;             // the guest contract's endpoint login
    std::optional<SshKeyPair> host_key;  // made here so the daemon knows what to expect
    std::string agent_token;             // set: provisioned through the guest agent
  };
  VmSpec MakeVmSpec(const Sandbox& sandbox, const Image& image, const SandboxNetwork& net,
                    LinkMode mode, const GuestSecrets& secrets) const;
  // Whether a create provisions through the guest agent rather than SSH.
  bool UsesAgent(const Validated& v, const VmDriver& driver) const;
  // What a create that names no egress gets (create.cc).
  EgressPolicy DefaultEgress() const;
  // The DNS servers the guest is told of.
  std::vector<Ipv4> GuestResolvers(const Sandbox& sandbox, const SandboxNetwork& net) const;
  void CheckFreeDisk() const;
  // The guest agent token of a sandbox (EngineOptions::agent_key).
  std::string AgentTokenFor(const SandboxId& id) const;
  // Sets a resumed guest's clock through its agent (it lags by the time
  // paused); logged, not thrown, when it cannot.
  void SyncGuestClock(const Sandbox& sandbox, VmDriver& driver);
  // The sandbox's lasting connection to its guest agent, opened on first
  // use; dropped (its streams ended) when the sandbox pauses or goes.
  std::shared_ptr<AgentLink> AgentLinkFor(const Sandbox& sandbox);
  std::shared_ptr<GuestChannel> ChannelFor(const Sandbox& sandbox);
  void DropAgentLink(const SandboxId& id);
  // kFailedPrecondition while a pause, resume or destroy of it runs.
  void CheckNotMoving(const SandboxId& id);
  // Idle timeouts (idle_timeout.cc). Something used the sandbox now.
  void NoteActivity(const SandboxId& id);
  // Whether `sandbox` has been idle for its idle timeout by now (an exec
  // running, a forwarded connection open or traffic count as activity,
  // and reset the clock). Never for one without a timeout.
  bool IdleTooLong(const Sandbox& sandbox);
  void ForgetActivity(const SandboxId& id);
  // A ready sandbox the caller may act on (the token as Destroy's).
  Sandbox ReadySandbox(const SandboxId& id, const std::optional<std::string>& token);
  // Removes the record, or keeps it for the reaper to retry if the store
  // cannot write (the host side is already gone).
  void ForgetRecord(const SandboxId& id, std::string_view event, const std::string& detail,
                    const std::string& cause);
  void RetryRecordRemovals();
  bool Hidden(const SandboxId& id);

  // The create pipeline; `slot_held`: the caller holds a create slot.
  CreateResult CreateNew(const CreateRequest& request, Validated v, bool slot_held);
  // A ready pool member for `request`, handed to its caller; nullopt when
  // no pool serves such a request or none is ready.
  std::optional<CreateResult> TakeFromPool(const CreateRequest& request, const Validated& v);
  void FillPoolsOnce();
  static std::string NewClientToken();

  // Snapshot templates (snapshots.cc). Which template serves a create.
  static std::string SnapshotFamily(const Validated& v);
  // What a template of `v`'s image and size is, to the driver (its key).
  static VmSpec TemplateSpec(const Validated& v);
  // The token a template's agent was booted with (its clones keep it until
  // their identity gives them their own).
  std::string TemplateAgentToken(const Validated& v) const;
  // `spec` started from its template; nullopt (a build asked for, or a
  // failed restore logged) when the create must boot instead.
  std::optional<VmInfo> StartFromSnapshot(VmDriver& driver, const VmSpec& spec, const Validated& v);
  void BuildSnapshotsOnce();
  void BuildSnapshot(const Validated& v);
  // A clone of `v`'s template failed (to restore, or to take its identity):
  // counted, the template dropped and made again (or, after too many, no more).
  void SnapshotFailed(VmDriver& driver, const VmSpec& spec, const Validated& v,
                      const std::string& why);
  // Room for one more template: the least recently used family goes (its
  // spec returned, for the driver to drop); with pool_mutex_.
  std::optional<VmSpec> EvictSnapshotLocked();
  void QueueSnapshotLocked(const std::string& family);  // with pool_mutex_
  bool background_needed() const { return !pools_.empty() || options_.snapshots; }

  EngineOptions options_;
  Store& store_;
  ImageCatalog& images_;
  EngineDrivers drivers_;
  SandboxNetworks& networks_;
  Provisioner& provisioner_;
  std::counting_semaphore<1024> create_slots_;
  std::chrono::steady_clock::time_point started_;

  // Tokens by SHA-256, loaded from the store on first use; the daemon is
  // the store's only writer, so the cache cannot go stale.
  void LoadAccessTokensLocked();
  std::mutex tokens_mutex_;
  bool tokens_loaded_ = false;
  std::map<std::string, AccessToken> tokens_by_hash_;

  // Creates under way (their rows are theirs, not the reaper's), and
  // records awaiting removal.
  std::mutex bookkeeping_mutex_;
  std::set<SandboxId> creating_;
  // Destroys under way (a request's or the reaper's): the reaper leaves
  // their rows alone instead of tearing the same sandbox down twice at once.
  std::multiset<SandboxId> destroying_;
  // Pauses, resumes and lifetime changes under way: one at a time per
  // sandbox, and the reaper leaves them alone.
  std::set<SandboxId> moving_;
  std::condition_variable moving_done_;  // one of those ended (with bookkeeping_mutex_)
  // Marks `id` as moving for its lifetime; kFailedPrecondition if it already is.
  class MovingGuard;
  std::optional<Sandbox> SandboxToMove(const SandboxId& id, const std::optional<std::string>& token,
                                       std::optional<MovingGuard>& moving);
  // `sandbox` as recorded paused now: its TTL left kept, expires_at the end
  // of its time paused.
  Sandbox AsPaused(const Sandbox& sandbox) const;
  // A time to live asked for (default_ttl without one), checked against
  // [1, max_ttl]: kInvalidArgument outside.
  std::int64_t CheckedTtl(std::optional<std::int64_t> ttl_seconds) const;
  // Adds to the event log after the change it tells of is done: a store
  // that cannot take it (a full disk) costs a warning, not the answer.
  void NoteEvent(std::string_view kind, const SandboxId& id, const std::string& detail);
  std::set<SandboxId> unrecorded_;

  SandboxGoneListener gone_listener_;
  CreateVeto create_veto_;

  // metrics.cc
  void RegisterMetrics();
  void CollectMetrics(MetricsWriter& out);
  void CountCreate(const CreateResult& result);
  // What each ready or paused sandbox among `sandboxes` uses (pool members left out).
  std::vector<SandboxUsage> UsageOf(std::vector<Sandbox> sandboxes);
  std::vector<PoolStatus> PoolStatuses();
  MetricsRegistry metrics_;
  CounterFamily* creates_ = nullptr;
  CounterFamily* create_failures_ = nullptr;
  HistogramFamily* create_phases_ = nullptr;
  CounterFamily* removals_ = nullptr;

  std::mutex agent_links_mutex_;
  // One connect at a time per sandbox (with agent_links_mutex_).
  std::map<SandboxId, std::shared_ptr<std::mutex>> agent_opening_;
  std::map<SandboxId, std::shared_ptr<AgentLink>> agent_links_;
  // The daemon's SSH way into sandboxes without an agent (memory only).
  std::map<SandboxId, std::shared_ptr<SshChannel>> ssh_channels_;
  std::map<std::string, std::weak_ptr<GuestExec>> execs_;  // with agent_links_mutex_

  struct Activity {
    std::chrono::steady_clock::time_point last;  // when it was last seen used
    std::uint64_t traffic_bytes = 0;             // its network's counters then
  };
  std::mutex activity_mutex_;
  std::map<SandboxId, Activity> activity_;  // from the first look after the daemon started

  // Warm pool members, each with the credentials only this process holds.
  struct PoolMember {
    SandboxId id;
    std::string password;
    std::string host_key;
  };
  struct Pool {
    PoolSpec spec;
    std::deque<PoolMember> ready;
    std::uint64_t hits = 0, misses = 0;
  };
  std::mutex pool_mutex_;
  std::vector<Pool> pools_;
  bool pool_stopping_ = false;
  std::condition_variable pool_wake_;
  std::thread pool_thread_;  // fills pools and builds snapshots
  struct SnapshotFamilyState {
    SnapshotStatus status;
    Validated template_of;  // the create that asked for it
    unsigned failures = 0;  // in a row
    std::chrono::steady_clock::time_point last_used;
  };
  std::map<std::string, SnapshotFamilyState> snapshot_families_;  // with pool_mutex_
  std::deque<std::string> snapshot_queue_;                        // families to build
  bool background_wake_ = false;  // work for the background thread (with pool_mutex_)

  std::mutex reaper_mutex_;
  std::condition_variable reaper_wake_;
  bool stopping_ = false;
  bool reap_now_ = false;  // a driver reported a VM that stopped
  std::thread reaper_;
};

}  // namespace ephemera

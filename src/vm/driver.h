// The hypervisor driver interface. The qemu driver implements it with a
// QEMU process per VM; a libvirt driver implements the same calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/sandbox.h"
#include "guest/guest_stream.h"
#include "vm/vm.h"

namespace ephemera {

class VmDriver {
 public:
  virtual ~VmDriver() = default;

  virtual std::string_view name() const = 0;

  // How this driver's VMs get their NIC (see LinkMode).
  virtual LinkMode link_mode() const { return LinkMode::kTap; }

  // The driver calls `listener` (on a thread of its own) when a VM stops
  // by itself, so that the reaper need not wait for its next pass.
  virtual void OnStopped(std::function<void(const SandboxId&)> listener) { (void)listener; }

  // The driver calls `listener` (on a thread of its own) when the OOM
  // killer ended processes inside a sandbox (`kills` since the last call).
  using OutOfMemoryListener = std::function<void(const SandboxId&, std::uint64_t kills)>;
  virtual void OnOutOfMemory(OutOfMemoryListener listener) { (void)listener; }

  // Whether Start hands GuestFile::secret files to the guest where nothing
  // else can read them (the qemu driver passes a descriptor). Others refuse
  // such files.
  virtual bool passes_secret_files() const { return false; }

  // Whether Start gives a VM the guest agent's channel (VmSpec::agent_channel).
  virtual bool supports_agent() const { return false; }

  // Programs and files in a running guest that the driver reaches itself
  // (a container's runtime); nullptr where the guest agent is the way in.
  virtual std::shared_ptr<GuestChannel> ChannelTo(const SandboxId& id) {
    (void)id;
    return nullptr;
  }

  // The hypervisor's own description of a running VM (libvirt's domain
  // XML), for users who know it; empty where there is none.
  virtual std::string DescribeXml(const SandboxId& id) {
    (void)id;
    return {};
  }

  // One line for status: "ok", or what is wrong (a lost connection).
  virtual std::string Health() const { return "ok"; }

  // For LinkMode::kShared: the guest's address once it has one (DHCP);
  // kTimeout after `timeout`.
  virtual Ipv4 WaitForAddress(const SandboxId& id, std::chrono::milliseconds timeout) {
    (void)id;
    (void)timeout;
    Fail(ErrorCode::kInternal, "driver {} does not learn guest addresses", name());
  }

  // Whether Pause and Resume work.
  // What the sandbox uses now; nullopt when it is not running or the
  // driver cannot tell.
  virtual std::optional<ResourceUsage> Usage(const SandboxId& id) {
    (void)id;
    return std::nullopt;
  }

  virtual bool supports_pause() const { return false; }

  // Saves the running VM's whole state (memory, devices) to a file of its
  // own and ends its process, freeing its host memory; its disk, NIC and
  // files stay. Inspect then says kSaved. On failure the VM runs on as
  // before and the error says why (kNoSpace for a full disk).
  virtual void Pause(const SandboxId& id) {
    Fail(ErrorCode::kFailedPrecondition, "driver {} cannot pause VM {}", name(), id.str());
  }

  // Restores a saved VM in a new process, where it stopped, and removes
  // the saved state. kFailedPrecondition if it has none or is running.
  virtual VmInfo Resume(const SandboxId& id) {
    Fail(ErrorCode::kFailedPrecondition, "driver {} cannot resume VM {}", name(), id.str());
  }

  // Snapshot templates: a VM booted once to a quiescent point (its agent
  // waiting for an identity), saved, and restored into each new VM of the
  // same image and size, whose memory maps the template's copy-on-write.
  virtual bool supports_snapshots() const { return false; }

  // Boots `spec` (an agent image; it gets a NIC of its own that reaches
  // nothing), waits until `ready` returns for it, saves it, and keeps it as
  // the template of VMs like `spec`, replacing an older one. Throws when
  // any step fails, leaving nothing.
  virtual void BuildSnapshot(const VmSpec& spec, const std::function<void(const VmInfo&)>& ready) {
    (void)spec;
    (void)ready;
    Fail(ErrorCode::kFailedPrecondition, "driver {} makes no snapshots", name());
  }

  // Starts `spec` from the template of VMs like it: nullopt when there is
  // none usable (none made yet, or made by another QEMU build: then it is
  // dropped). When the restore fails, the template is dropped and this
  // throws, leaving nothing of the VM: the caller may Start it cold.
  virtual std::optional<VmInfo> StartFromSnapshot(const VmSpec& spec) {
    (void)spec;
    return std::nullopt;
  }

  // Stops serving the template of VMs like `spec` (a clone of it that
  // would not work), logging `why`.
  virtual void DropSnapshot(const VmSpec& spec, const std::string& why) {
    (void)spec;
    (void)why;
  }

  // Starts a VM. On failure throws and leaves nothing behind (no process,
  // no file). kInvalidArgument for a bad spec, kUnavailable for a missing
  // program or device, kAlreadyExists if the id is in use.
  virtual VmInfo Start(const VmSpec& spec) = 0;

  // The VM's current state; kShutoff once its process has exited.
  // kNotFound when the driver knows no such VM.
  virtual VmInfo Inspect(const SandboxId& id) = 0;

  // Asks the guest to power off (ACPI); returns true if it did within
  // `timeout`. The VM's files stay until Destroy.
  virtual bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) = 0;

  // Stops the VM hard if it still runs and removes every file it owns.
  // Idempotent: destroying an unknown or half-created VM succeeds.
  virtual void Destroy(const SandboxId& id) = 0;

  // Every VM this driver finds on the host, running or not (for reconcile).
  virtual std::vector<SandboxId> List() = 0;

 protected:
  // For Start's failure path: Destroy, logging (not throwing) what it could
  // not undo, so the start's own error is the one that propagates.
  void DestroyAfterFailedStart(const SandboxId& id);
};

}  // namespace ephemera

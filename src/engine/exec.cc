// Programs and files in a sandbox's guest (README, "Exec and files"): on
// the driver's own channel (a container's runtime), else through the guest
// agent's streams, on one lasting connection per sandbox. Never the user's
// password, never the guest's network.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/random.h"
#include "engine/engine.h"
#include "guest/agent_channel.h"

namespace ephemera {

using nlohmann::json;

namespace {

constexpr std::chrono::seconds kAgentTimeout{10};

AgentLink::Clock::time_point Soon() { return AgentLink::Clock::now() + kAgentTimeout; }

void CheckGuestPath(const std::string& path) {
  if (path.empty() || path[0] != '/' || path.size() > 4096 ||
      path.find('\0') != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument, "'path' must be an absolute path in the guest");
  }
}

}  // namespace

Sandbox Engine::ReadySandbox(const SandboxId& id, const std::optional<std::string>& token) {
  std::optional<Sandbox> sandbox = token ? std::optional(GetWithToken(id, *token)) : Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (sandbox->state != SandboxState::kReady) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is {}: only a ready one runs programs",
         id.str(), StateName(sandbox->state));
  }
  return *sandbox;
}

std::shared_ptr<AgentLink> Engine::AgentLinkFor(const Sandbox& sandbox) {
  std::shared_ptr<std::mutex> opening_lock;
  {
    std::lock_guard lock(agent_links_mutex_);
    auto it = agent_links_.find(sandbox.id);
    if (it != agent_links_.end() && !it->second->closed()) return it->second;
    auto& slot = agent_opening_[sandbox.id];
    if (!slot) slot = std::make_shared<std::mutex>();
    opening_lock = slot;
  }
  // One connect at a time per sandbox (QEMU serves one client per
  // channel); a guest whose agent does not answer holds up only its own.
  std::lock_guard opening(*opening_lock);
  {
    std::lock_guard lock(agent_links_mutex_);  // another open may have won meanwhile
    auto it = agent_links_.find(sandbox.id);
    if (it != agent_links_.end() && !it->second->closed()) return it->second;
  }
  CheckNotMoving(sandbox.id);
  if (options_.agent_key.empty()) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {}: this daemon keeps no agent key",
         sandbox.id.str());
  }
  VmInfo vm = DriverOf(sandbox).Inspect(sandbox.id);
  if (vm.agent_socket.empty()) {
    Fail(ErrorCode::kFailedPrecondition,
         "sandbox {} has no way in for exec and files: its image has no guest agent (or its "
         "driver reaches none), and the daemon's SSH key for it is gone (kept in memory only, "
         "it does not outlive a restart)",
         sandbox.id.str());
  }
  auto link = AgentLink::Open(vm.agent_socket, AgentTokenFor(sandbox.id), Soon());
  // Recorded only while no pause, resume or destroy runs: those drop the
  // link after marking the sandbox, so a link made meanwhile would outlive
  // them (and hold the channel the resume's clock sync needs).
  std::lock_guard bookkeeping(bookkeeping_mutex_);
  if (moving_.count(sandbox.id) != 0 || destroying_.count(sandbox.id) != 0) {
    link->Close();
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is being paused, resumed or destroyed",
         sandbox.id.str());
  }
  std::lock_guard lock(agent_links_mutex_);
  agent_links_[sandbox.id] = link;
  return link;
}

void Engine::CheckNotMoving(const SandboxId& id) {
  std::lock_guard lock(bookkeeping_mutex_);
  if (moving_.count(id) != 0 || destroying_.count(id) != 0) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is being paused, resumed or destroyed",
         id.str());
  }
}

void Engine::DropAgentLink(const SandboxId& id) {
  std::shared_ptr<AgentLink> link;
  {
    std::lock_guard lock(agent_links_mutex_);
    agent_opening_.erase(id);
    auto it = agent_links_.find(id);
    if (it == agent_links_.end()) return;
    link = std::move(it->second);
    agent_links_.erase(it);
  }
  link->Close();
}

std::shared_ptr<GuestChannel> Engine::ChannelFor(const Sandbox& sandbox) {
  if (auto channel = DriverOf(sandbox).ChannelTo(sandbox.id)) return channel;
  {
    std::lock_guard lock(agent_links_mutex_);
    auto ssh = ssh_channels_.find(sandbox.id);
    if (ssh != ssh_channels_.end()) return ssh->second;
  }
  return std::make_shared<AgentChannel>(AgentLinkFor(sandbox));
}

std::shared_ptr<GuestExec> Engine::StartExec(const SandboxId& id, const ExecRequest& request,
                                             const std::optional<std::string>& token) {
  if (request.argv.empty() || request.argv[0].empty()) {
    Fail(ErrorCode::kInvalidArgument, "'argv' must name a program");
  }
  Sandbox sandbox = ReadySandbox(id, token);
  GuestCommand command;
  command.argv = request.argv;
  command.env = request.env;
  command.cwd = request.cwd;
  command.user = request.user.empty() ? sandbox.username : request.user;
  if (command.user.empty()) command.user = "root";  // an image without a client account
  command.tty = request.tty;
  command.rows = request.rows;
  command.cols = request.cols;
  command.timeout_ms = request.timeout_seconds * 1000;
  command.stdin_open = request.stdin_open;
  NoteActivity(id);
  auto exec = std::make_shared<GuestExec>(id);
  exec->id = RandomString(16, "0123456789abcdef");
  exec->tty = request.tty;
  exec->stdin_open = request.stdin_open || request.tty;
  exec->stream = ChannelFor(sandbox)->Exec(command, Soon());
  exec->pid = exec->stream->started().value("pid", 0);
  std::lock_guard lock(agent_links_mutex_);
  std::erase_if(execs_, [](const auto& entry) { return entry.second.expired(); });
  execs_[exec->id] = exec;
  return exec;
}

std::shared_ptr<GuestExec> Engine::FindExec(const SandboxId& id, const std::string& exec_id,
                                            const std::optional<std::string>& token) {
  ReadySandbox(id, token);
  std::lock_guard lock(agent_links_mutex_);
  auto it = execs_.find(exec_id);
  std::shared_ptr<GuestExec> exec = it == execs_.end() ? nullptr : it->second.lock();
  if (!exec || exec->sandbox != id) {
    Fail(ErrorCode::kNotFound, "sandbox {} runs no exec {} (it ended?)", id.str(), exec_id);
  }
  return exec;
}

GuestDownload Engine::Download(const SandboxId& id, const std::string& path,
                               const std::optional<std::string>& token) {
  CheckGuestPath(path);
  Sandbox sandbox = ReadySandbox(id, token);
  NoteActivity(id);
  auto channel = ChannelFor(sandbox);
  // The guest resolves the path (its links, its ".."): the host never does.
  GuestDownload download;
  if (channel->Stat(path, Soon()).directory) {
    download.tar = true;
    GuestCommand tar;
    tar.argv = {"tar", "-c", "-f", "-", "-C", path, "."};
    tar.user = channel->PrivilegedUser();
    download.stream = channel->Exec(tar, Soon());
  } else {
    download.stream = channel->Read(path, Soon());
    download.size = download.stream->started().value("size", std::uint64_t{0});
  }
  return download;
}

std::shared_ptr<GuestStream> Engine::Upload(const SandboxId& id, const GuestUpload& upload,
                                            const std::optional<std::string>& token) {
  CheckGuestPath(upload.path);
  Sandbox sandbox = ReadySandbox(id, token);
  NoteActivity(id);
  auto channel = ChannelFor(sandbox);
  if (upload.tar) {
    // Unpacked by the guest's tar, as its owner (root unless named), into
    // the folder, made first if need be.
    GuestCommand mkdir;
    mkdir.argv = {"mkdir", "-p", "--", upload.path};
    mkdir.user = upload.owner.empty() ? (sandbox.username.empty() ? "root" : sandbox.username)
                                      : upload.owner;
    auto made = channel->Exec(mkdir, Soon());
    std::string errors;
    for (;;) {
      GuestEvent event = made->Next(Soon());
      if (event.kind == GuestEvent::Kind::kStderr && errors.size() < 1024) errors += event.data;
      if (event.kind != GuestEvent::Kind::kEnd) continue;
      if (event.end.value("exit", -1) != 0) {
        Fail(ErrorCode::kFailedPrecondition, "the guest cannot make the folder {}: {}", upload.path,
             errors.empty() ? event.end.dump() : errors);
      }
      break;
    }
    GuestCommand tar = mkdir;
    tar.argv = {"tar", "-x", "-f", "-", "-C", upload.path};
    tar.stdin_open = true;
    return channel->Exec(tar, Soon());
  }
  // The client's own by default, as what its execs make.
  return channel->Write(upload.path, upload.mode,
                        upload.owner.empty() ? sandbox.username : upload.owner, Soon());
}

}  // namespace ephemera

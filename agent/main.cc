// ephemera-agent: the guest side of docs/guest-agent.md. Started by the
// default image's rcS when the host handed it a token through fw_cfg; it
// applies the sandbox's identity (accounts, host key, network, sshd) in
// one message instead of the guest contract's SSH logins.
//
// Statically linked and free of the host's code: it runs on the guest's
// root filesystem, whatever its libc.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/channel.h"
#include "agent/error.h"
#include "agent/files.h"
#include "agent/identity.h"
#include "agent/log.h"
#include "agent/protocol.h"
#include "agent/streams.h"
#include "agent/system.h"

namespace ephemera::agent {
namespace {

struct Options {
  std::string token_file = "/sys/firmware/qemu_fw_cfg/by_name/opt/ephemera/agent_token/raw";
  std::string device;  // default: the port named org.ephemera.agent.0
  std::string console = "/dev/console";
  std::string root = "/";
};

constexpr char kUsage[] =
    "usage: ephemera-agent [--token-file PATH] [--device PATH] [--console PATH] [--root DIR]\n"
    "  --token-file  the host's token (default: fw_cfg opt/ephemera/agent_token)\n"
    "  --device      the channel (default: the virtio-serial port org.ephemera.agent.0)\n"
    "  --console     where errors go (default: /dev/console)\n"
    "  --root        the root filesystem whose files are edited (default: /)\n";

bool ParseOptions(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::string* target = arg == "--token-file" ? &options.token_file
                          : arg == "--device"   ? &options.device
                          : arg == "--console"  ? &options.console
                          : arg == "--root"     ? &options.root
                                                : nullptr;
    if (target == nullptr || i + 1 >= argc) return false;
    *target = argv[++i];
  }
  return true;
}

// Forgets the connection's state: a new host must say hello again, and
// what the old one started ends (docs/guest-agent.md).
void Disconnected(Session& session, LineFramer& framer) {
  session.HostDisconnected();
  framer.Reset();
}

// The loop: requests from the host, output of the streams, SIGCHLD and
// SIGIO through a signalfd. The port is polled only while a host is
// connected (without one it reports POLLHUP at once, and would spin);
// SIGIO says when one comes.
int Serve(Port& port, Session& session, Streams& streams) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGIO);
  sigaddset(&signals, SIGCHLD);
  const int signal_fd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    LogError(std::string("signalfd: ") + std::strerror(errno));
    return 1;
  }
  LineFramer framer;
  std::string buffer(64 * 1024, '\0');
  bool connected = true;  // until a read says otherwise
  bool failing = false;   // the channel's errors are logged once per streak
  std::vector<pollfd> fds;
  auto flush_events = [&] {
    for (const std::string& event : streams.TakeEvents()) {
      if (!port.WriteLine(event)) {
        Disconnected(session, framer);
        connected = false;
        return;
      }
    }
  };
  for (;;) {
    fds.clear();
    fds.push_back({signal_fd, POLLIN, 0});
    if (connected) fds.push_back({port.fd(), POLLIN, 0});
    const size_t first_stream = fds.size();
    streams.AddPollFds(fds);
    int timeout = streams.PollTimeoutMs();
    if (!connected && (timeout < 0 || timeout > 1000)) timeout = 1000;
    if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) {
      LogError(std::string("poll: ") + std::strerror(errno));
      ::sleep(1);
      continue;
    }
    bool try_port = connected && (fds[1].revents != 0);
    if (fds[0].revents != 0) {
      signalfd_siginfo info;
      while (::read(signal_fd, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGIO) try_port = true;
      }
    }
    if (!connected) try_port = true;  // SIGIO or the fallback timeout
    streams.OnPolled(fds, first_stream);
    streams.Tick();
    flush_events();
    while (try_port) {
      ssize_t n = port.TryRead(buffer.data(), buffer.size());
      if (n > 0) {
        connected = true;
        failing = false;
        for (const LineFramer::Frame& frame :
             framer.Feed({buffer.data(), static_cast<size_t>(n)})) {
          std::string answer =
              frame.overlong ? Session::OverlongAnswer() : session.Answer(frame.line);
          if (!port.WriteLine(answer)) {
            // The host went away: what it sent belonged to that connection.
            Disconnected(session, framer);
            connected = false;
            try_port = false;
            break;
          }
          flush_events();
          if (!connected) {
            try_port = false;
            break;
          }
        }
        continue;
      }
      if (n == 0) {
        // No host connected. (A reconnection between two reads goes
        // unseen; only the daemon can open the host side.)
        if (connected) Disconnected(session, framer);
        connected = false;
      } else if (errno == EAGAIN) {
        connected = true;
        failing = false;
      } else {
        if (!failing) LogError(std::string("cannot read the channel: ") + std::strerror(errno));
        failing = true;
        connected = false;
      }
      try_port = false;
    }
  }
}

int Run(const Options& options) {
  ::umask(022);
  ::signal(SIGPIPE, SIG_IGN);
  // Its own session: started in the background by rcS, it outlives it.
  ::setsid();
  int console = ::open(options.console.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC | O_APPEND);
  if (console >= 0) SetLogFd(console);

  std::string token;
  try {
    token = ReadFile(options.token_file);
  } catch (const std::exception& e) {
    LogError(std::string("no token: ") + e.what());
    return 1;
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (!IsToken(token)) {
    LogError("the token in " + options.token_file + " is not 64 lowercase hex characters");
    return 1;
  }

  BlockSigio();  // before the port exists: no SIGIO may find it unblocked
  int fd = options.device.empty() ? OpenPort(kChannelName, std::chrono::seconds(5))
                                  : ::open(options.device.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    LogError(ErrnoText(
        "open",
        options.device.empty() ? std::string("virtio-serial port ") + kChannelName : options.device,
        errno));
    return 1;
  }
  Port port(fd);
  LogLine("EPHEMERA_AGENT_READY");

  LinuxSystem system;
  GuestMachine machine{Root(options.root), system};
  Streams streams{Root(options.root)};
  Session session(token, machine, &streams);
  return Serve(port, session, streams);
}

}  // namespace
}  // namespace ephemera::agent

int main(int argc, char** argv) {
  ephemera::agent::Options options;
  if (!ephemera::agent::ParseOptions(argc, argv, options)) {
    std::fputs(ephemera::agent::kUsage, stderr);
    return 2;
  }
  return ephemera::agent::Run(options);
}

#include "core/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace ephemera {

namespace {

sockaddr_un AddressOf(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof addr.sun_path) {
    Fail(ErrorCode::kInvalidArgument, "socket path {} is too long", path.string());
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return addr;
}

}  // namespace

UniqueFd ListenUnix(const std::filesystem::path& path) {
  sockaddr_un addr = AddressOf(path);
  ::unlink(path.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) FailErrno("socket", errno);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd.get(), 4) != 0) {
    FailErrno(fmt::format("cannot listen on {}", path.string()), errno);
  }
  ::chmod(path.c_str(), 0600);
  return fd;
}

UniqueFd TryConnectUnix(const std::filesystem::path& path, bool nonblocking) {
  sockaddr_un addr = AddressOf(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) FailErrno("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

}  // namespace ephemera

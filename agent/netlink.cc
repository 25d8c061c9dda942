#include "agent/netlink.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "agent/error.h"
#include "agent/files.h"

namespace ephemera::agent {

namespace {

// Requests in one buffer, each with NLM_F_ACK, and what each one does (for
// the error message of the one the kernel refuses).
class Batch {
 public:
  template <typename Header>
  void Begin(uint16_t type, uint16_t flags, const Header& header, std::string what) {
    start_ = bytes_.size();
    nlmsghdr message{};
    message.nlmsg_type = type;
    message.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    message.nlmsg_seq = static_cast<uint32_t>(what_.size() + 1);
    Append(&message, sizeof message);
    Append(&header, sizeof header);
    what_.push_back(std::move(what));
  }
  void Attribute(uint16_t type, const void* data, size_t size) {
    rtattr attribute{static_cast<unsigned short>(RTA_LENGTH(size)), type};
    Append(&attribute, sizeof attribute);
    Append(data, size);
  }
  void End() {
    uint32_t length = static_cast<uint32_t>(bytes_.size() - start_);
    std::memcpy(bytes_.data() + start_ + offsetof(nlmsghdr, nlmsg_len), &length, sizeof length);
  }
  const std::vector<char>& bytes() const { return bytes_; }
  size_t size() const { return what_.size(); }
  const std::string& what(uint32_t seq) const { return what_.at(seq - 1); }

 private:
  // Every part padded to 4 bytes (NLMSG_ALIGN, RTA_ALIGN).
  void Append(const void* data, size_t size) {
    const char* begin = static_cast<const char*>(data);
    bytes_.insert(bytes_.end(), begin, begin + size);
    bytes_.resize(NLMSG_ALIGN(bytes_.size()));
  }

  std::vector<char> bytes_;
  size_t start_ = 0;
  std::vector<std::string> what_;
};

class Socket {
 public:
  Socket() : fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {
    if (fd_ < 0) throw std::runtime_error(ErrnoText("open", "a netlink socket", errno));
  }
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Sends the batch and reads every answer; throws for the first refusal.
void Run(const Batch& batch) {
  Socket socket;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  const std::vector<char>& bytes = batch.bytes();
  if (::sendto(socket.fd(), bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel) != static_cast<ssize_t>(bytes.size())) {
    throw std::runtime_error(ErrnoText("send", "netlink requests", errno));
  }
  std::string first_error;
  size_t answered = 0;
  char buffer[8192];
  while (answered < batch.size()) {
    ssize_t n = ::recv(socket.fd(), buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(ErrnoText("read", "netlink answers", errno));
    size_t length = static_cast<size_t>(n);
    for (size_t offset = 0; offset + NLMSG_HDRLEN <= length;) {
      nlmsghdr header;
      std::memcpy(&header, buffer + offset, sizeof header);
      if (header.nlmsg_len < NLMSG_HDRLEN || offset + header.nlmsg_len > length) break;
      if (header.nlmsg_type == NLMSG_ERROR && header.nlmsg_seq != 0 &&
          header.nlmsg_seq <= batch.size() && header.nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr))) {
        ++answered;
        nlmsgerr answer;
        std::memcpy(&answer, buffer + offset + NLMSG_HDRLEN, sizeof answer);
        if (answer.error != 0 && first_error.empty()) {
          first_error =
              "cannot " + batch.what(header.nlmsg_seq) + ": " + std::strerror(-answer.error);
        }
      }
      offset += NLMSG_ALIGN(header.nlmsg_len);
    }
  }
  if (!first_error.empty()) throw std::runtime_error(first_error);
}

int InterfaceIndex(const std::string& name, const std::string& sys_class_net) {
  std::string text = ReadFile(sys_class_net + "/" + name + "/ifindex");
  int index = std::atoi(text.c_str());
  if (index <= 0) throw std::runtime_error("no interface index for " + name);
  return index;
}

// "52:54:00:12:34:56\n" in sysfs; zeros when unreadable (then it is set).
std::array<uint8_t, 6> CurrentMac(const std::string& name, const std::string& sys_class_net) {
  std::array<uint8_t, 6> mac{};
  std::optional<std::string> text = ReadFileIfExists(sys_class_net + "/" + name + "/address");
  unsigned bytes[6];
  if (text && std::sscanf(text->c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &bytes[0], &bytes[1], &bytes[2],
                          &bytes[3], &bytes[4], &bytes[5]) == 6) {
    for (size_t i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(bytes[i]);
  }
  return mac;
}

std::string Dotted(in_addr address) {
  char text[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

}  // namespace

std::string FirstInterface(const std::string& sys_class_net) {
  DIR* dir = ::opendir(sys_class_net.c_str());
  if (dir == nullptr) return "";
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != ".." && name != "lo") names.push_back(name);
  }
  ::closedir(dir);
  if (names.empty()) return "";
  return *std::min_element(names.begin(), names.end());
}

void ConfigureInterface(const std::string& name, const Network& network,
                        const std::string& sys_class_net) {
  int index = InterfaceIndex(name, sys_class_net);
  Batch batch;

  ifinfomsg link{};
  link.ifi_family = AF_UNSPEC;
  link.ifi_index = index;
  link.ifi_change = IFF_UP;
  // The MAC only when it differs (a clone restored from another machine's
  // memory): QEMU's NIC has the sandbox's own MAC from the start.
  if (CurrentMac(name, sys_class_net) != network.mac) {
    // Down first: a NIC that is up may refuse a new MAC (EBUSY); at the
    // first identity it is down already, and this does nothing.
    batch.Begin(RTM_NEWLINK, 0, link, "bring " + name + " down for its MAC");
    batch.End();
    batch.Begin(RTM_NEWLINK, 0, link, "set the MAC of " + name);
    batch.Attribute(IFLA_ADDRESS, network.mac.data(), network.mac.size());
    batch.End();
  }
  link.ifi_flags = IFF_UP;
  batch.Begin(RTM_NEWLINK, 0, link, "bring " + name + " up");
  batch.End();

  ifaddrmsg address{};
  address.ifa_family = AF_INET;
  address.ifa_prefixlen = static_cast<unsigned char>(network.prefix);
  address.ifa_scope = RT_SCOPE_UNIVERSE;
  address.ifa_index = static_cast<unsigned>(index);
  batch.Begin(
      RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, address,
      "add " + Dotted(network.address) + "/" + std::to_string(network.prefix) + " to " + name);
  batch.Attribute(IFA_LOCAL, &network.address, sizeof network.address);
  batch.Attribute(IFA_ADDRESS, &network.address, sizeof network.address);
  batch.End();

  if (network.gateway) {
    rtmsg route{};
    route.rtm_family = AF_INET;
    route.rtm_table = RT_TABLE_MAIN;
    route.rtm_protocol = RTPROT_BOOT;
    route.rtm_scope = RT_SCOPE_UNIVERSE;
    route.rtm_type = RTN_UNICAST;
    batch.Begin(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, route,
                "add the default route via " + Dotted(*network.gateway));
    batch.Attribute(RTA_GATEWAY, &*network.gateway, sizeof *network.gateway);
    uint32_t oif = static_cast<uint32_t>(index);
    batch.Attribute(RTA_OIF, &oif, sizeof oif);
    batch.End();
  }
  Run(batch);
}

}  // namespace ephemera::agent

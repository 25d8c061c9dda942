#include "vm/qemu/memory_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "core/error.h"

namespace ephemera {

UniqueFd MakeMemoryFile(unsigned memory_mib) {
  UniqueFd fd(::memfd_create("ephemera-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) FailErrno("cannot make a memory file (memfd_create)", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(std::uint64_t{memory_mib} << 20)) != 0) {
    FailErrno("cannot size the memory file", errno);
  }
  return fd;
}

void FillMemoryFile(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) FailErrno("cannot read the memory file's size", errno);
  if (::fallocate(fd, 0, 0, st.st_size) != 0) {
    FailErrno(
        "cannot fill the memory file", errno,
        errno == ENOSPC || errno == ENOMEM ? ErrorCode::kResourceExhausted : ErrorCode::kInternal);
  }
}

void SealMemoryFile(int fd) {
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    FailErrno("cannot seal the memory file", errno);
  }
}

}  // namespace ephemera

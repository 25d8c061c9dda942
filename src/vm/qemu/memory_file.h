// Guest memory in a file the daemon holds (a memfd), for snapshot
// templates: the template's QEMU writes it through a shared mapping; once
// sealed, the kernel lets its clones map it only privately (copy-on-write)
// and refuses every write, shared writable mapping, resize and hole punch,
// whoever opens it.
#pragma once

#include "core/unique_fd.h"

namespace ephemera {

// An empty memory file of `memory_mib` (its pages come on first touch).
UniqueFd MakeMemoryFile(unsigned memory_mib);

// Gives every page of it that has none yet (zeros): a clone's first touch
// of a page the template never used then finds it, instead of adding it to
// the shared file on the clone's account.
void FillMemoryFile(int fd);

// Seals it against any change, for good. Fails (EBUSY) while anyone maps
// it shared and writable.
void SealMemoryFile(int fd);

}  // namespace ephemera

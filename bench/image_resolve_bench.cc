// What resolving an image costs a create, per image: the catalog's Get
// (manifest read, files checked, digests from the per-version cache) as a
// create does it, cold (the first create after a start, digests computed)
// and warm (every later one). It isolates what a cached imported image adds
// to a create, which bench/imported_create.sh cannot: there the boot's
// run-to-run spread under TCG (hundreds of ms) hides a few ms.
// Usage: image_resolve_bench IMAGE_DIR NAME... [--iterations N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "image/catalog.h"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::vector<std::string> names;
  int iterations = 200;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::max(1, std::atoi(argv[++i]));
    } else {
      names.push_back(arg);
    }
  }
  if (argc < 3 || names.empty()) {
    std::fprintf(stderr, "usage: %s IMAGE_DIR NAME... [--iterations N]\n", argv[0]);
    return 2;
  }
  try {
    ephemera::ImageCatalog catalog(argv[1]);
    std::printf("%-14s %12s %12s %12s\n", "image", "cold ms", "warm median", "warm p99");
    for (const auto& name : names) {
      auto t0 = Clock::now();
      catalog.Get(name);
      const double cold = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      std::vector<double> warm;
      for (int i = 0; i < iterations; ++i) {
        auto t = Clock::now();
        catalog.Get(name);
        warm.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
      }
      std::sort(warm.begin(), warm.end());
      std::printf("%-14s %12.1f %9.3f ms %9.3f ms\n", name.c_str(), cold, warm[warm.size() / 2],
                  warm[warm.size() * 99 / 100]);
    }
  } catch (const ephemera::Error& e) {
    std::fprintf(stderr, "image_resolve_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

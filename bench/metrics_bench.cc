// What counting costs a request: one CounterFamily::Add (the front doors'
// ephemera_requests_total, per request), and one scrape's Render of a
// registry the size of a busy daemon's.
#include <benchmark/benchmark.h>

#include "core/metrics.h"

namespace {

void BM_CounterAdd(benchmark::State& state) {
  ephemera::MetricsRegistry registry;
  ephemera::CounterFamily& requests =
      registry.Counter("x_requests_total", "Requests.", {"door", "verb", "status"});
  const ephemera::LabelValues labels = {"https", "GET /v1/status", "200"};
  for (auto _ : state) requests.Add(labels);
}
BENCHMARK(BM_CounterAdd)->Threads(1)->Threads(2);

void BM_Render(benchmark::State& state) {
  ephemera::MetricsRegistry registry;
  auto& requests = registry.Counter("x_requests_total", "Requests.", {"door", "verb", "status"});
  for (int route = 0; route < 30; ++route) {
    for (const char* status : {"200", "400", "404"}) {
      requests.Add({"socket", "GET /v1/route" + std::to_string(route), status});
    }
  }
  auto& phases =
      registry.Histogram("x_seconds", "Phases.", {"kind", "phase"}, {0.01, 0.1, 1, 10, 100});
  for (const char* phase : {"network", "vm_start", "sshd_up", "provision", "total"}) {
    phases.Observe({"vm", phase}, 1.5);
  }
  // A gauge per sandbox, as the per-sandbox series are.
  registry.AddCollector([](ephemera::MetricsWriter& out) {
    out.Family("x_sandbox_memory_bytes", "gauge", "Memory.");
    for (int i = 0; i < static_cast<int>(64); ++i) {
      out.Sample({{"sandbox", "0b5ad6c2-8f7e-4f6e-9a59-5d1f0c9e2a" + std::to_string(10 + i)}}, 1e8);
    }
  });
  for (auto _ : state) benchmark::DoNotOptimize(registry.Render());
}
BENCHMARK(BM_Render);

}  // namespace

BENCHMARK_MAIN();

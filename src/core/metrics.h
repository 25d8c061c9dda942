// Metrics in the Prometheus text exposition format (version 0.0.4): counter
// and histogram families kept by the parts that count, and collectors that
// write gauges read at scrape time (sandboxes by state, a QEMU's memory).
// Debian ships no C++ Prometheus client, so the format is written here.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ephemera {

// Label values in the order the family declared its label names.
using LabelValues = std::vector<std::string>;

class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels);
  void Add(const LabelValues& values, double amount = 1);
  double Value(const LabelValues& values) const;  // 0 for a series never added to

 private:
  friend class MetricsRegistry;
  void Render(std::string& out) const;

  const std::string name_, help_;
  const std::vector<std::string> labels_;
  mutable std::mutex mutex_;
  std::map<LabelValues, double> series_;
};

class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                  std::vector<double> bounds);
  void Observe(const LabelValues& values, double value);
  std::uint64_t Count(const LabelValues& values) const;

 private:
  friend class MetricsRegistry;
  struct Series {
    std::vector<std::uint64_t> buckets;  // per bound, not cumulative
    std::uint64_t count = 0;
    double sum = 0;
  };
  void Render(std::string& out) const;

  const std::string name_, help_;
  const std::vector<std::string> labels_;
  const std::vector<double> bounds_;  // ascending; +Inf is implied
  mutable std::mutex mutex_;
  std::map<LabelValues, Series> series_;
};

// What a collector writes: whole families, each its header then its samples.
class MetricsWriter {
 public:
  explicit MetricsWriter(std::string& out) : out_(out) {}
  // type: "gauge" or "counter" (a counter's name ends in _total).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(const std::vector<std::pair<std::string_view, std::string>>& labels, double value);
  void Sample(double value) { Sample({}, value); }

 private:
  std::string& out_;
  std::string family_;
};

class MetricsRegistry {
 public:
  // Families live as long as the registry; names and labels are checked
  // against Prometheus' rules (a bad one is a bug: kInternal).
  CounterFamily& Counter(std::string name, std::string help, std::vector<std::string> labels = {});
  HistogramFamily& Histogram(std::string name, std::string help, std::vector<std::string> labels,
                             std::vector<double> bounds);
  // Called at every Render, after the families, in the order added.
  void AddCollector(std::function<void(MetricsWriter&)> collector);
  std::string Render() const;

 private:
  void CheckUnusedLocked(const std::string& name) const;

  mutable std::mutex mutex_;
  std::set<std::string> names_;
  std::vector<std::unique_ptr<CounterFamily>> counters_;
  std::vector<std::unique_ptr<HistogramFamily>> histograms_;
  std::vector<std::function<void(MetricsWriter&)>> collectors_;
};

// The content type of Render's text.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// A number as the format writes it: shortest round trip, +Inf, -Inf, NaN.
std::string MetricValue(double value);

}  // namespace ephemera

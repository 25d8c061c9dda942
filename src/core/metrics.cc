#include "core/metrics.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"

namespace ephemera {

namespace {

bool ValidName(std::string_view name, bool colon_allowed) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_allowed && c == ':');
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void CheckNames(std::string_view name, const std::vector<std::string>& labels) {
  if (!ValidName(name, true)) Fail(ErrorCode::kInternal, "'{}' is not a metric name", name);
  for (const auto& label : labels) {
    if (!ValidName(label, false) || label.starts_with("__") || label == "le") {
      Fail(ErrorCode::kInternal, "'{}' is not a label name for {}", label, name);
    }
  }
}

void CheckArity(std::string_view name, const std::vector<std::string>& labels,
                const LabelValues& values) {
  if (values.size() != labels.size()) {
    Fail(ErrorCode::kInternal, "{} takes {} label values, not {}", name, labels.size(),
         values.size());
  }
}

// Label values escape backslash, double quote and newline; help text
// backslash and newline.
void AppendEscaped(std::string& out, std::string_view text, bool quote) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void AppendHeader(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  AppendEscaped(out, help, false);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void AppendSample(std::string& out, std::string_view name,
                  const std::vector<std::pair<std::string_view, std::string_view>>& labels,
                  double value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    bool first = true;
    for (const auto& [label, text] : labels) {
      if (!first) out += ',';
      first = false;
      out += label;
      out += "=\"";
      AppendEscaped(out, text, true);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += MetricValue(value);
  out += '\n';
}

std::vector<std::pair<std::string_view, std::string_view>> Zip(
    const std::vector<std::string>& names, const LabelValues& values) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  for (std::size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], values[i]);
  return out;
}

}  // namespace

std::string MetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)) {
  CheckNames(name_, labels_);
}

void CounterFamily::Add(const LabelValues& values, double amount) {
  CheckArity(name_, labels_, values);
  if (!(amount >= 0)) Fail(ErrorCode::kInternal, "{} may not go down ({})", name_, amount);
  std::lock_guard lock(mutex_);
  series_[values] += amount;
}

double CounterFamily::Value(const LabelValues& values) const {
  std::lock_guard lock(mutex_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second;
}

void CounterFamily::Render(std::string& out) const {
  AppendHeader(out, name_, "counter", help_);
  std::lock_guard lock(mutex_);
  // A family without labels shows its one series from the start.
  if (labels_.empty() && series_.empty()) AppendSample(out, name_, {}, 0);
  for (const auto& [values, value] : series_) AppendSample(out, name_, Zip(labels_, values), value);
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> labels, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      labels_(std::move(labels)),
      bounds_(std::move(bounds)) {
  CheckNames(name_, labels_);
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      Fail(ErrorCode::kInternal, "{}: bucket bounds must be finite and ascending", name_);
    }
  }
}

void HistogramFamily::Observe(const LabelValues& values, double value) {
  CheckArity(name_, labels_, values);
  std::lock_guard lock(mutex_);
  Series& s = series_[values];
  if (s.buckets.empty()) s.buckets.resize(bounds_.size());
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (value <= bounds_[i]) {
      ++s.buckets[i];
      break;
    }
  }
  ++s.count;
  s.sum += value;
}

std::uint64_t HistogramFamily::Count(const LabelValues& values) const {
  std::lock_guard lock(mutex_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second.count;
}

void HistogramFamily::Render(std::string& out) const {
  AppendHeader(out, name_, "histogram", help_);
  std::lock_guard lock(mutex_);
  const std::string bucket = name_ + "_bucket";
  for (const auto& [values, s] : series_) {
    auto labels = Zip(labels_, values);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      const std::string le = i < bounds_.size() ? MetricValue(bounds_[i]) : "+Inf";
      cumulative += i < bounds_.size() ? s.buckets[i] : 0;
      auto with_le = labels;
      with_le.emplace_back("le", le);
      AppendSample(out, bucket, with_le,
                   static_cast<double>(i < bounds_.size() ? cumulative : s.count));
    }
    AppendSample(out, name_ + "_sum", labels, s.sum);
    AppendSample(out, name_ + "_count", labels, static_cast<double>(s.count));
  }
}

void MetricsWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  CheckNames(name, {});
  family_ = std::string(name);
  AppendHeader(out_, name, type, help);
}

void MetricsWriter::Sample(const std::vector<std::pair<std::string_view, std::string>>& labels,
                           double value) {
  if (family_.empty()) Fail(ErrorCode::kInternal, "a metric sample before its family");
  std::vector<std::pair<std::string_view, std::string_view>> views(labels.begin(), labels.end());
  AppendSample(out_, family_, views, value);
}

CounterFamily& MetricsRegistry::Counter(std::string name, std::string help,
                                        std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  CheckUnusedLocked(name);
  names_.insert(name);
  counters_.push_back(
      std::make_unique<CounterFamily>(std::move(name), std::move(help), std::move(labels)));
  return *counters_.back();
}

HistogramFamily& MetricsRegistry::Histogram(std::string name, std::string help,
                                            std::vector<std::string> labels,
                                            std::vector<double> bounds) {
  std::lock_guard lock(mutex_);
  CheckUnusedLocked(name);
  names_.insert(name);
  histograms_.push_back(std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                                          std::move(labels), std::move(bounds)));
  return *histograms_.back();
}

void MetricsRegistry::CheckUnusedLocked(const std::string& name) const {
  if (names_.count(name)) Fail(ErrorCode::kInternal, "metric family {} is registered twice", name);
}

void MetricsRegistry::AddCollector(std::function<void(MetricsWriter&)> collector) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  std::vector<const CounterFamily*> counters;
  std::vector<const HistogramFamily*> histograms;
  std::vector<std::function<void(MetricsWriter&)>> collectors;
  {
    std::lock_guard lock(mutex_);
    for (const auto& c : counters_) counters.push_back(c.get());
    for (const auto& h : histograms_) histograms.push_back(h.get());
    collectors = collectors_;
  }
  std::string out;
  for (const auto* c : counters) c->Render(out);
  for (const auto* h : histograms) h->Render(out);
  MetricsWriter writer(out);
  for (const auto& collect : collectors) collect(writer);
  return out;
}

}  // namespace ephemera

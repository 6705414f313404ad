#include "gates.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "error.hpp"

namespace coatnet {
namespace {

// Which direction passes: true = value >= threshold, false = value <= threshold.
const std::map<std::string, bool> kDirection = {
    {"cosine_min", true},     {"cosine_mean", true},  {"top1_agreement", true}, {"top5_agreement", true},
    {"sqnr_db", true},        {"max_abs_err", false}, {"mean_abs_err", false},  {"accuracy_drop", false},
};

// Indices of the k largest values, ties in index order (NumPy's stable argsort of -x); NaN ranks
// last, so the ordering stays a strict weak order whatever the engine returned.
std::vector<int> topk(const double* x, int n, int k) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  auto key = [&](int i) { return std::isnan(x[i]) ? -std::numeric_limits<double>::infinity() : x[i]; };
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key(a) > key(b); });
  idx.resize(std::min(k, n));
  return idx;
}

}  // namespace

double Metrics::get(const std::string& name) const {
  if (name == "cosine_min") return cosine_min;
  if (name == "cosine_mean") return cosine_mean;
  if (name == "max_abs_err") return max_abs_err;
  if (name == "mean_abs_err") return mean_abs_err;
  if (name == "top1_agreement") return top1_agreement;
  if (name == "top5_agreement") return top5_agreement;
  if (name == "sqnr_db") return sqnr_db;
  return std::numeric_limits<double>::quiet_NaN();
}

Metrics compute_metrics(const std::vector<float>& ref, const std::vector<float>& act, int classes, const std::vector<int>& rows) {
  Metrics m;
  m.samples = static_cast<int>(rows.size());
  const double inf = std::numeric_limits<double>::infinity();
  const double big = std::numeric_limits<double>::max();
  double cos_sum = 0, abs_sum = 0, sig = 0, noise = 0;
  int top1 = 0, top5 = 0;
  m.cosine_min = inf;
  std::vector<double> r(classes), a(classes);
  for (int row : rows) {
    const float* rr = &ref[static_cast<size_t>(row) * classes];
    const float* ar = &act[static_cast<size_t>(row) * classes];
    bool finite = true, identical = true;
    for (int c = 0; c < classes; ++c) {
      r[c] = rr[c];
      a[c] = ar[c];
      finite = finite && std::isfinite(a[c]);
      identical = identical && r[c] == a[c];
    }
    double dot = 0, nr = 0, na = 0, row_max = 0;
    for (int c = 0; c < classes; ++c) {
      // A non-finite output counts as an infinite error; its cosine is taken on NaN -> 0, +-Inf ->
      // +-max (numpy.nan_to_num) and capped at 0, as compare.py does.
      const double ac = std::isnan(a[c]) ? 0.0 : std::isinf(a[c]) ? std::copysign(big, a[c]) : a[c];
      dot += r[c] * ac;
      nr += r[c] * r[c];
      na += ac * ac;
      const double d = std::isfinite(a[c]) ? std::fabs(r[c] - a[c]) : inf;
      row_max = std::max(row_max, d);
      abs_sum += d;
      sig += r[c] * r[c];
      noise += d * d;
    }
    nr = std::sqrt(nr);
    na = std::sqrt(na);
    double cos = (nr > 0 && na > 0 && std::isfinite(nr * na)) ? dot / (nr * na) : (nr == 0 && na == 0) ? 1.0 : 0.0;
    cos = std::max(-1.0, std::min(1.0, cos));
    if (!finite) {
      cos = std::min(0.0, cos);
      ++m.non_finite;
    }
    if (identical) cos = 1.0;  // dot / (|r||a|) would round to 1 - 2e-16
    m.cosine_min = std::min(m.cosine_min, cos);
    cos_sum += cos;
    m.max_abs_err = std::max(m.max_abs_err, row_max);
    const int ref_top = topk(r.data(), classes, 1)[0];
    const std::vector<int> act_top = topk(a.data(), classes, 5);
    top1 += act_top[0] == ref_top;
    top5 += std::find(act_top.begin(), act_top.end(), ref_top) != act_top.end();
  }
  m.finite = m.non_finite == 0;
  const double n = std::max<size_t>(rows.size(), 1);
  m.cosine_mean = cos_sum / n;
  m.mean_abs_err = abs_sum / (n * classes);
  m.top1_agreement = top1 / n;
  m.top5_agreement = top5 / n;
  m.sqnr_db = noise == 0 ? inf : (sig > 0 && std::isfinite(noise)) ? 10.0 * std::log10(sig / noise) : -inf;
  if (rows.empty()) m.cosine_min = 1.0;
  return m;
}

std::map<std::string, double> read_gates(const nlohmann::json& gates, const std::string& where) {
  std::map<std::string, double> out;
  if (gates.is_null()) return out;
  if (!gates.is_object())
    throw UserError(where + "manifest.gates is not a mapping of metric to threshold", "the manifest was edited", "export the bundle again");
  std::string known;
  for (const auto& kv : kDirection) known += (known.empty() ? "" : ", ") + kv.first;
  for (auto it = gates.begin(); it != gates.end(); ++it) {
    if (!kDirection.count(it.key()))
      throw UserError(where + "manifest.gates has an unknown metric '" + it.key() + "'", "known metrics are: " + known,
                      "export the bundle again");
    if (!it.value().is_number())
      throw UserError(where + "manifest.gates." + it.key() + " is " + it.value().dump(), "a threshold must be a number",
                      "export the bundle again");
    out[it.key()] = it.value().get<double>();
  }
  return out;
}

GateVerdict apply_gates(const std::map<std::string, double>& gates, const Metrics& m) {
  GateVerdict v;
  v.gates = gates;
  for (const auto& [name, threshold] : gates) {
    if (name == "accuracy_drop") {  // needs an evaluation set, which a bundle does not carry
      v.skipped.push_back(name);
      continue;
    }
    const double value = m.get(name);
    const bool ok = kDirection.at(name) ? value >= threshold : value <= threshold;
    if (!m.finite || !ok || std::isnan(value)) v.failed.push_back(name);
  }
  return v;
}

}  // namespace coatnet

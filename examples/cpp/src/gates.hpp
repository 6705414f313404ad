// Parity metrics and gates on logits, as INTERFACES.md defines them for bundle self-tests.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace coatnet {

struct Metrics {
  int samples = 0;
  double cosine_min = 0, cosine_mean = 0, max_abs_err = 0, mean_abs_err = 0;
  double top1_agreement = 0, top5_agreement = 0, sqnr_db = 0;
  bool finite = true;  // no NaN / Inf in the engine's output
  int non_finite = 0;  // samples whose output holds NaN or Inf
  double get(const std::string& name) const;
};

// Reference and actual logits (rows x classes, row-major), over the rows in `rows`.
Metrics compute_metrics(const std::vector<float>& ref, const std::vector<float>& act, int classes, const std::vector<int>& rows);

struct GateVerdict {
  std::map<std::string, double> gates;       // metric -> threshold (as in the manifest)
  std::vector<std::string> failed;           // metrics that failed, sorted
  std::vector<std::string> skipped;          // gates a device self-test cannot evaluate (accuracy_drop)
  bool passed() const { return failed.empty(); }
};

// manifest.gates -> thresholds; UserError (prefixed by `where`) for an unknown metric or a non-number.
std::map<std::string, double> read_gates(const nlohmann::json& gates, const std::string& where);

GateVerdict apply_gates(const std::map<std::string, double>& gates, const Metrics& m);

}  // namespace coatnet

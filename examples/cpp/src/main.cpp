// coatnet-classify: classify images with a coatnet-deploy bundle, or self-test the bundle, on
// OpenVINO's C++ runtime. Exit codes as coatnet-deploy's: 0 done / passed, 1 bad input (one line
// on stderr), 2 a parity gate failed.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bundle.hpp"
#include "engine.hpp"
#include "error.hpp"
#include "gates.hpp"
#include "npy.hpp"
#include "preprocess.hpp"

#ifndef COATNET_VERSION
#define COATNET_VERSION "0"
#endif

namespace coatnet {
namespace {

const char* const kUsage =
    "usage: coatnet-classify COMMAND ...\n"
    "\n"
    "  classify BUNDLE IMAGE... [--topk K] [--json] [--threads N] [--dump-tensor PATH]\n"
    "      top-k classes per JPEG/PNG image; --json prints only\n"
    "      [{\"image\": ..., \"topk\": [{\"index\": i, \"label\": ..., \"prob\": p}, ...]}, ...]\n"
    "      --dump-tensor writes the preprocessed inputs as one N x 3 x H x W float32 .npy\n"
    "  selftest BUNDLE [--threads N] [--json]\n"
    "      golden inputs vs stored reference logits under the manifest's gates (exit 2 if one fails)\n"
    "  bench BUNDLE [--iterations N] [--warmup N] [--batch B] [--threads N] [--rss-every N]\n"
    "      times inference on the golden inputs; prints JSON with every inference's time;\n"
    "      --rss-every N prints 'rss inferences=I vmrss_kb=K' on stderr after every N (soak runs)\n"
    "  preprocess BUNDLE|PREPROCESS.json IMAGE... --dump-tensor PATH [--dump-pixels PATH]\n"
    "      preprocessing only (no model): the float32 tensor, and the uint8 N x H x W x 3 crop\n"
    "\n"
    "Every file the manifest lists is checked (size, SHA-256) before anything is loaded.\n"
    "Exit codes: 0 done / passed, 1 bad input, 2 a parity gate failed.\n";

struct Option {
  bool takes_value;
};

// Command-line arguments: positionals and --options (--name VALUE or --name=VALUE).
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
  std::set<std::string> flags;

  bool has(const std::string& name) const { return values.count(name) || flags.count(name); }
  std::string value(const std::string& name, const std::string& fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
  int positive(const std::string& name, int fallback) const {
    if (!values.count(name)) return fallback;
    const std::string& v = values.at(name);
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || n < 1 || n > 1000000)
      throw UserError("--" + name + " is '" + v + "'", "it must be a positive integer");
    return static_cast<int>(n);
  }
};

Args parse(const std::string& command, const std::vector<std::string>& argv, const std::map<std::string, Option>& options) {
  Args a;
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (only_positional || s.size() < 2 || s[0] != '-' ) {
      a.positional.push_back(s);
      continue;
    }
    if (s == "--") {
      only_positional = true;
      continue;
    }
    std::string name = s.substr(s[1] == '-' ? 2 : 1), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = options.find(name);
    if (s[1] != '-' || it == options.end()) {
      std::string valid;
      for (const auto& kv : options) valid += (valid.empty() ? "--" : ", --") + kv.first;
      throw UserError("unknown option '" + s.substr(0, inline_value ? s.find('=') : s.size()) + "' for " + command,
                      "valid options are: " + valid, "see 'coatnet-classify --help'");
    }
    if (it->second.takes_value) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) throw UserError("option --" + name + " needs a value", "none was given", "see 'coatnet-classify --help'");
        value = argv[++i];
      }
      a.values[name] = value;
    } else {
      if (inline_value) throw UserError("option --" + name + " takes no value", "'" + value + "' was given");
      a.flags.insert(name);
    }
  }
  return a;
}

void need_positionals(const Args& a, size_t n, const std::string& usage) {
  if (a.positional.size() < n) throw UserError("missing arguments", "usage: coatnet-classify " + usage, "see 'coatnet-classify --help'");
}

std::string dumps(const nlohmann::json& j, int indent = -1) { return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace); }

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// Softmax in float64 with the maximum subtracted, as coatnet_deploy.runtime.classifier.softmax.
std::vector<double> softmax(const float* logits, int n) {
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  std::vector<double> p(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += p[i] = std::exp(static_cast<double>(logits[i]) - mx);
  for (double& v : p) v /= sum;
  return p;
}

std::vector<float> run_batched(Engine& engine, const std::vector<float>& inputs, int n, int max_batch, size_t image) {
  std::vector<float> out;
  for (int i = 0; i < n; i += max_batch) {
    const int m = std::min(max_batch, n - i);
    std::vector<float> o = engine.infer(inputs.data() + image * i, m);
    out.insert(out.end(), o.begin(), o.end());
  }
  return out;
}

void warn_status(const Bundle& b) {
  if (!b.status.empty() && b.status != "PASSED")
    std::cerr << "warning: bundle '" << b.shown << "' status is " << b.status << " (a parity gate failed at export)\n";
}

void note_substitute(const Engine& e) {
  if (e.substitute()) std::cerr << "note: runs " << e.runs() << "\n";
}

// ------------------------------------------------------------------------------ commands

int cmd_classify(const std::vector<std::string>& argv) {
  const Args a = parse("classify", argv, {{"topk", {true}}, {"json", {false}}, {"threads", {true}}, {"dump-tensor", {true}}});
  need_positionals(a, 2, "classify BUNDLE IMAGE... [--topk K] [--json]");
  const int topk_req = a.positive("topk", 5), threads = a.positive("threads", 0);
  Bundle b = open_bundle(a.positional[0]);
  check_target(b);
  const std::vector<std::string> images(a.positional.begin() + 1, a.positional.end());
  // Every image first: one unreadable file must not leave half the answers printed.
  std::vector<float> inputs;
  for (const std::string& path : images) preprocess_file(path, b.preprocess, inputs);
  const int S = b.preprocess.crop;
  const size_t image = static_cast<size_t>(3) * S * S;
  if (a.has("dump-tensor"))
    write_npy_f32(a.value("dump-tensor"), {static_cast<int64_t>(images.size()), 3, S, S}, inputs.data());
  Engine engine(b, threads);
  note_substitute(engine);
  const std::vector<float> logits = run_batched(engine, inputs, static_cast<int>(images.size()), b.batch_max, image);
  warn_status(b);
  const int k = std::min(topk_req, b.num_classes);
  nlohmann::json results = nlohmann::json::array();
  for (size_t i = 0; i < images.size(); ++i) {
    const std::vector<double> p = softmax(logits.data() + i * b.num_classes, b.num_classes);
    std::vector<int> idx(b.num_classes);
    std::iota(idx.begin(), idx.end(), 0);
    // Stable: equal probabilities keep index order, as the Python runtime's argsort(kind="stable").
    std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) { return p[x] > p[y]; });
    nlohmann::json top = nlohmann::json::array();
    for (int j = 0; j < k; ++j) top.push_back({{"index", idx[j]}, {"label", b.labels[idx[j]]}, {"prob", p[idx[j]]}});
    results.push_back({{"image", images[i]}, {"topk", top}});
  }
  if (a.has("json")) {
    std::cout << dumps(results) << "\n";
  } else {
    for (const nlohmann::json& r : results) {
      std::cout << r["image"].get<std::string>() << "\n";
      for (const nlohmann::json& t : r["topk"]) {
        char line[64];
        std::snprintf(line, sizeof line, "  %8.4f  %5d  ", t["prob"].get<double>(), t["index"].get<int>());
        std::cout << line << t["label"].get<std::string>() << "\n";
      }
    }
  }
  return EXIT_OK;
}

struct Golden {
  NpyArray inputs, logits;
  std::vector<std::string> names;
};

Golden read_golden(const Bundle& b) {
  const nlohmann::json golden = b.manifest.value("golden", nlohmann::json::object());
  const nlohmann::json npy = golden.is_object() ? golden.value("npy", nlohmann::json()) : nlohmann::json();
  if (!npy.is_object() || !npy.contains("inputs") || !npy.contains("reference_logits") || !npy.at("inputs").is_string() ||
      !npy.at("reference_logits").is_string())
    throw UserError(b.where() + "no golden .npy files (manifest.golden.npy)",
                    "it was exported by a coatnet-deploy that wrote golden.npz only",
                    "export it again to self-test it here, or run coatnet-deploy parity on it");
  Golden g;
  const std::string fin = npy.at("inputs").get<std::string>(), flog = npy.at("reference_logits").get<std::string>();
  g.inputs = read_npy_f32(b.file(fin).string(), b.where() + fin);
  g.logits = read_npy_f32(b.file(flog).string(), b.where() + flog);
  const int S = b.preprocess.crop;
  const auto& si = g.inputs.shape;
  const auto& sl = g.logits.shape;
  if (si.size() != 4 || si[0] < 1 || si[1] != 3 || si[2] != S || si[3] != S)
    throw UserError(b.where() + fin + " has the wrong shape", "expected N x 3 x " + std::to_string(S) + " x " + std::to_string(S),
                    "export the bundle again");
  if (sl.size() != 2 || sl[0] != si[0] || sl[1] != b.num_classes)
    throw UserError(b.where() + flog + " has the wrong shape",
                    "expected " + std::to_string(si[0]) + " x " + std::to_string(b.num_classes) + " (one row per golden input)",
                    "export the bundle again");
  const nlohmann::json names = golden.is_object() ? golden.value("names", nlohmann::json()) : nlohmann::json();
  if (names.is_array()) {
    if (names.size() != static_cast<size_t>(si[0]))
      throw UserError(b.where() + "manifest.golden.names has " + std::to_string(names.size()) + " names",
                      "the golden data has " + std::to_string(si[0]) + " samples", "export the bundle again");
    for (const nlohmann::json& n : names) g.names.push_back(n.is_string() ? n.get<std::string>() : "");
  }
  return g;
}

// manifest.gate_samples: "all" (default) or "images" (names "image:..."; all when there are none).
std::vector<int> gated_rows(const Bundle& b, const Golden& g, std::string& mode) {
  const nlohmann::json v = b.manifest.value("gate_samples", nlohmann::json("all"));
  mode = v.is_string() ? v.get<std::string>() : dumps(v);
  if (mode != "all" && mode != "images")
    throw UserError(b.where() + "manifest.gate_samples is '" + mode + "'", "use \"all\" or \"images\"", "export the bundle again");
  const int n = static_cast<int>(g.inputs.shape[0]);
  std::vector<int> rows;
  for (int i = 0; i < n; ++i)
    if (mode == "all" || (i < static_cast<int>(g.names.size()) && g.names[i].rfind("image:", 0) == 0)) rows.push_back(i);
  if (rows.empty())
    for (int i = 0; i < n; ++i) rows.push_back(i);
  return rows;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

int cmd_selftest(const std::vector<std::string>& argv) {
  const Args a = parse("selftest", argv, {{"threads", {true}}, {"json", {false}}});
  need_positionals(a, 1, "selftest BUNDLE");
  if (a.positional.size() > 1) throw UserError("selftest takes one BUNDLE", "got " + std::to_string(a.positional.size()) + " paths");
  const int threads = a.positive("threads", 0);
  Bundle b = open_bundle(a.positional[0]);
  check_target(b);
  const Golden g = read_golden(b);
  const std::map<std::string, double> gates = read_gates(b.manifest.value("gates", nlohmann::json::object()), b.where());
  std::string mode;
  const std::vector<int> rows = gated_rows(b, g, mode);
  Engine engine(b, threads);
  note_substitute(engine);
  const int n = static_cast<int>(g.inputs.shape[0]);
  const size_t image = static_cast<size_t>(3) * b.preprocess.crop * b.preprocess.crop;
  const std::vector<float> out = run_batched(engine, g.inputs.data, n, b.batch_max, image);
  const Metrics m = compute_metrics(g.logits.data, out, b.num_classes, rows);
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  const Metrics every = compute_metrics(g.logits.data, out, b.num_classes, all);
  const GateVerdict v = apply_gates(gates, m);
  const std::string status = v.passed() ? "PASSED" : "FAILED";
  if (a.has("json")) {
    auto metrics = [](const Metrics& x) {
      return nlohmann::json{{"samples", x.samples},
                            {"cosine_min", finite_or_null(x.cosine_min)},
                            {"cosine_mean", finite_or_null(x.cosine_mean)},
                            {"max_abs_err", finite_or_null(x.max_abs_err)},
                            {"mean_abs_err", finite_or_null(x.mean_abs_err)},
                            {"top1_agreement", x.top1_agreement},
                            {"top5_agreement", x.top5_agreement},
                            {"sqnr_db", finite_or_null(x.sqnr_db)},
                            {"non_finite_samples", x.non_finite}};
    };
    nlohmann::json p = metrics(m);
    p["gates"] = v.gates;
    p["passed"] = v.passed();
    p["failed_gates"] = v.failed;
    p["skipped_gates"] = v.skipped;
    p["gate_samples"] = mode;
    p["all_samples"] = metrics(every);
    std::cout << dumps({{"bundle", b.shown}, {"runs", engine.runs()}, {"status", status}, {"parity", p}}) << "\n";
  } else {
    std::string line = status + ": " + b.shown + " (" + engine.runs() + ")  golden " + std::to_string(m.samples) + " of " +
                       std::to_string(n) + " samples (gate_samples " + mode + ")  cos_min " + fmt("%.6f", m.cosine_min) +
                       "  max_abs " + fmt("%.3g", m.max_abs_err) + "  top1 " + fmt("%.3f", m.top1_agreement) + "  top5 " +
                       fmt("%.3f", m.top5_agreement) + "  sqnr " + fmt("%.1f", m.sqnr_db) + " dB";
    if (!v.passed()) {
      line += "  failed gates:";
      for (const std::string& f : v.failed) line += " " + f + " (" + fmt("%.6g", m.get(f)) + " vs " + fmt("%.6g", v.gates.at(f)) + ")";
      if (!m.finite) line += " [the engine returned NaN/Inf]";
    }
    std::cout << line << "\n";
  }
  return v.passed() ? EXIT_OK : EXIT_GATE_FAILED;
}

// This process's resident set size from /proc/self/status (Linux), -1 where there is none.
long vmrss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

int cmd_bench(const std::vector<std::string>& argv) {
  const Args a = parse("bench", argv, {{"iterations", {true}}, {"warmup", {true}}, {"batch", {true}}, {"threads", {true}}, {"rss-every", {true}}});
  need_positionals(a, 1, "bench BUNDLE [--iterations N] [--warmup N] [--batch B] [--threads N] [--rss-every N]");
  const int iterations = a.positive("iterations", 50), threads = a.positive("threads", 0);
  const int rss_every = a.has("rss-every") ? a.positive("rss-every", 1) : 0;
  const int warmup = a.has("warmup") && a.value("warmup") == "0" ? 0 : a.positive("warmup", 10);
  const auto t0 = std::chrono::steady_clock::now();
  Bundle b = open_bundle(a.positional[0]);
  check_target(b);
  const int batch = a.positive("batch", 1);
  if (batch > b.batch_max)
    throw UserError("--batch is " + std::to_string(batch), "this bundle's engine takes batches of 1 to " + std::to_string(b.batch_max));
  const Golden g = read_golden(b);
  Engine engine(b, threads);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const int n = static_cast<int>(g.inputs.shape[0]);
  const size_t image = static_cast<size_t>(3) * b.preprocess.crop * b.preprocess.crop;
  // Batches cycle through the golden inputs; built once, so only inference is timed.
  std::vector<float> x(image * batch);
  std::vector<double> times;
  double first_ms = 0;
  // One untimed-for-the-statistics first inference (a static-batch engine compiles in it), then the
  // warm-up, then the timed iterations.
  for (int it = -1; it < warmup + iterations; ++it) {
    for (int j = 0; j < batch; ++j) {
      const size_t src = static_cast<size_t>((std::max(it, 0) * batch + j) % n) * image;
      std::copy(g.inputs.data.begin() + static_cast<std::ptrdiff_t>(src),
                g.inputs.data.begin() + static_cast<std::ptrdiff_t>(src + image), x.begin() + static_cast<std::ptrdiff_t>(j * image));
    }
    const auto s = std::chrono::steady_clock::now();
    (void)engine.infer(x.data(), batch);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count();
    if (it < 0) first_ms = ms;
    if (it >= warmup) times.push_back(ms);
    // Counted after the first (compiling) inference: warm-up + timed ones, as tools/reliability/soak.py reads them.
    if (rss_every > 0 && it >= 0 && (it + 1) % rss_every == 0)
      std::cerr << "rss inferences=" << it + 1 << " vmrss_kb=" << vmrss_kb() << std::endl;
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double q) {
    if (sorted.empty()) return 0.0;
    const double pos = q * (sorted.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  };
  const double mean = sorted.empty() ? 0.0 : std::accumulate(sorted.begin(), sorted.end(), 0.0) / sorted.size();
  nlohmann::json out = {{"bundle", b.shown},
                        {"runs", engine.runs()},
                        {"threads", threads > 0 ? nlohmann::json(threads) : nlohmann::json(nullptr)},
                        {"batch", batch},
                        {"warmup", warmup},
                        {"iterations", iterations},
                        {"load_ms", load_ms},
                        {"compile_ms", engine.compile_ms()},
                        {"first_ms", first_ms},
                        {"p50_ms", pct(0.5)},
                        {"p90_ms", pct(0.9)},
                        {"mean_ms", mean},
                        {"min_ms", sorted.empty() ? 0.0 : sorted.front()},
                        {"max_ms", sorted.empty() ? 0.0 : sorted.back()},
                        {"samples_ms", times}};
  std::cout << dumps(out) << "\n";
  return EXIT_OK;
}

int cmd_preprocess(const std::vector<std::string>& argv) {
  const Args a = parse("preprocess", argv, {{"dump-tensor", {true}}, {"dump-pixels", {true}}});
  need_positionals(a, 2, "preprocess BUNDLE|PREPROCESS.json IMAGE... --dump-tensor PATH");
  if (!a.has("dump-tensor") && !a.has("dump-pixels"))
    throw UserError("preprocess writes nothing without --dump-tensor or --dump-pixels", "", "pass --dump-tensor PATH");
  const std::string& spec = a.positional[0];
  PreprocessConfig cfg;
  std::error_code ec;
  if (std::filesystem::is_directory(spec, ec)) {
    cfg = open_bundle(spec).preprocess;
  } else {
    std::ifstream f(spec, std::ios::binary);
    if (!f) throw UserError("cannot read " + spec, "no such file or directory", "pass a bundle directory or a JSON file");
    nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw UserError(spec + " is not a JSON object", "", "write the manifest's preprocess settings into it");
    cfg = PreprocessConfig::from_json(j.contains("preprocess") ? j.at("preprocess") : j, spec + ": ");
  }
  const std::vector<std::string> images(a.positional.begin() + 1, a.positional.end());
  std::vector<float> inputs;
  std::vector<uint8_t> pixels;
  for (const std::string& path : images) {
    Image crop = preprocess_file(path, cfg, inputs);
    pixels.insert(pixels.end(), crop.pixels.begin(), crop.pixels.end());
  }
  const int64_t N = static_cast<int64_t>(images.size()), S = cfg.crop;
  if (a.has("dump-tensor")) write_npy_f32(a.value("dump-tensor"), {N, 3, S, S}, inputs.data());
  if (a.has("dump-pixels")) write_npy_u8(a.value("dump-pixels"), {N, S, S, 3}, pixels.data());
  return EXIT_OK;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return EXIT_USER;
  }
  const std::string command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "-h" || command == "--help" || command == "help") {
    std::cout << kUsage;
    return EXIT_OK;
  }
  if (command == "--version") {
    std::cout << "coatnet-classify " << COATNET_VERSION << " (OpenVINO " << openvino_version() << ")\n";
    return EXIT_OK;
  }
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() || std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    std::cout << kUsage;
    return EXIT_OK;
  }
  if (command == "classify") return cmd_classify(rest);
  if (command == "selftest") return cmd_selftest(rest);
  if (command == "bench") return cmd_bench(rest);
  if (command == "preprocess") return cmd_preprocess(rest);
  throw UserError("unknown command '" + command + "'", "use classify, selftest, bench or preprocess", "see 'coatnet-classify --help'");
}

}  // namespace
}  // namespace coatnet

int main(int argc, char** argv) {
  try {
    return coatnet::run(argc, argv);
  } catch (const coatnet::UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return coatnet::EXIT_USER;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory.\n";
    return coatnet::EXIT_USER;
  } catch (const std::exception& e) {
    std::cerr << "coatnet-classify: internal error (a bug; please report it): " << e.what() << "\n";
    return coatnet::EXIT_BUG;
  }
}

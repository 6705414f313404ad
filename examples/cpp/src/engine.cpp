#include "engine.hpp"

#include <chrono>
#include <cstring>
#include <map>
#include <sstream>

#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>

#include "error.hpp"

namespace coatnet {
namespace {

// OpenVINO's messages carry a chain of "Exception from src/...:NN:" lines; keep what they say.
std::string brief(const std::exception& e) {
  std::istringstream in(e.what());
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.empty() || line.rfind("Exception from ", 0) == 0) continue;
    out += (out.empty() ? "" : " ") + line;
  }
  if (out.empty()) out = e.what();
  if (out.size() > 400) out = out.substr(0, 400) + "...";
  return out;
}

}  // namespace

std::string openvino_version() { return ov::get_openvino_version().buildNumber; }

const char* runnable_targets() { return "openvino (model.xml), onnx and onnxruntime (model.onnx through OpenVINO's ONNX reader)"; }

void check_target(const Bundle& b) {
  if (b.target == "openvino" || b.target == "onnx" || b.target == "onnxruntime") return;
  throw UserError(b.where() + "target '" + b.target + "' cannot run in coatnet-classify",
                  "it runs " + std::string(runnable_targets()),
                  b.target == "tensorrt" ? "run TensorRT bundles with TensorRT's own API or coatnet-deploy predict"
                                         : "export the model for target openvino");
}

struct Engine::Impl {
  // Declared first, destroyed last: the model's operations come from the frontend's library.
  ov::frontend::FrontEndManager frontends;
  ov::frontend::FrontEnd::Ptr frontend;
  ov::Core core;
  ov::AnyMap config;
  std::shared_ptr<ov::Model> model;
  // One compiled model for every batch size, or (static_batch) one per batch size, made on first use.
  bool static_batch = false;
  std::map<int, std::pair<ov::CompiledModel, ov::InferRequest>> compiled;
  size_t output_index = 0;
  int size = 0, classes = 0, batch_min = 1, batch_max = 1;
  std::string cannot_compile;  // the message's "what"

  ov::InferRequest& request(int n) {
    const int key = static_batch ? n : -1;
    auto it = compiled.find(key);
    if (it != compiled.end()) return it->second.second;
    std::shared_ptr<ov::Model> m = model;
    if (static_batch) {
      m = model->clone();
      ov::PartialShape shape = m->input().get_partial_shape();
      shape[0] = n;
      m->reshape(shape);
    }
    try {
      ov::CompiledModel c = core.compile_model(m, "CPU", config);
      ov::InferRequest r = c.create_infer_request();
      return compiled.emplace(key, std::make_pair(std::move(c), std::move(r))).first->second.second;
    } catch (const std::exception& e) {
      throw UserError(cannot_compile, brief(e), "export the bundle again");
    }
  }
};

Engine::Engine(const Bundle& b, int threads) : impl_(std::make_unique<Impl>()) {
  check_target(b);
  const bool ir = b.target == "openvino";
  const std::string file = ir ? "model.xml" : "model.onnx";
  const std::filesystem::path path = b.file(file);
  // Pinned as the Python runner pins it: OpenVINO would otherwise pick bf16/f16 where the CPU has it.
  std::string hint = "f32";
  const nlohmann::json engine = b.manifest.value("engine", nlohmann::json::object());
  if (ir && engine.is_object() && engine.contains("inference_precision_hint") && engine.at("inference_precision_hint").is_string())
    hint = engine.at("inference_precision_hint").get<std::string>();
  ov::element::Type precision;
  if (hint == "f32")
    precision = ov::element::f32;
  else if (hint == "f16")
    precision = ov::element::f16;
  else if (hint == "bf16")
    precision = ov::element::bf16;
  else
    throw UserError(b.where() + "engine.inference_precision_hint is '" + hint + "'", "use one of: f32, f16, bf16", "export the bundle again");
  // OpenVINO 2026.4's CPU plugin runs a dynamic-batch INT8 model wrong on AMX CPUs once the batch
  // shrinks after a larger one: INT8 engines compile per batch size (the manifest's
  // engine.static_batch; bundles without the key: precision int8), as the Python runner does.
  Impl& m = *impl_;
  const nlohmann::json sb = engine.is_object() ? engine.value("static_batch", nlohmann::json()) : nlohmann::json();
  if (!sb.is_null() && !sb.is_boolean())
    throw UserError(b.where() + "engine.static_batch is " + sb.dump(), "it must be true or false", "export the bundle again");
  m.static_batch = sb.is_boolean() ? sb.get<bool>() : b.precision == "int8";
  const std::string per_batch = m.static_batch ? ", compiled per batch size" : "";
  runs_ = ir ? "openvino on model.xml (" + hint + per_batch + ")"
             : "openvino on model.onnx (" + hint + per_batch + ", OpenVINO's ONNX reader; the bundle's own runtime is " +
                   (b.target == "onnx" ? std::string("onnxruntime") : b.target) + ")";
  substitute_ = !ir;
  m.size = b.preprocess.crop;
  m.classes = b.num_classes;
  m.batch_min = b.batch_min;
  m.batch_max = b.batch_max;
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<ov::Model> model;
  try {
    // The bundle says which format it is: ask that frontend only. Core::read_model would probe
    // every installed frontend (TensorFlow's prints its own parse errors for a damaged file).
    m.frontend = m.frontends.load_by_framework(ir ? "ir" : "onnx");
    ov::frontend::InputModel::Ptr input =
        ir ? m.frontend->load(path.string(), b.file("model.bin").string()) : m.frontend->load(path.string());
    if (!input) throw std::runtime_error("the frontend did not load it");
    model = m.frontend->convert(input);
  } catch (const std::exception& e) {
    throw UserError(b.where() + "OpenVINO cannot read " + file, brief(e), "export the bundle again");
  }
  try {
    if (model->inputs().size() != 1)
      throw UserError(b.where() + file + " has " + std::to_string(model->inputs().size()) + " inputs",
                      "a classifier takes one NCHW image batch", "export the bundle again");
    for (size_t i = 0; i < model->outputs().size(); ++i)
      if (model->output(i).get_names().count("logits")) {
        m.output_index = i;
        break;
      }
    ov::PartialShape shape = model->input().get_partial_shape();
    if (shape.rank().is_dynamic() || shape.rank().get_length() != 4)
      throw UserError(b.where() + file + "'s input is not N x 3 x H x W", "a classifier takes one NCHW image batch",
                      "export the bundle again");
    if (!m.static_batch && shape[0].is_static()) {
      shape[0] = ov::Dimension::dynamic();
      model->reshape(shape);
    }
    m.config = {ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::hint::inference_precision(precision)};
    if (threads > 0) m.config.emplace(ov::inference_num_threads(threads));
    m.model = model;
    m.cannot_compile = b.where() + "OpenVINO cannot compile " + file + " for the CPU";
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    throw UserError(b.where() + "OpenVINO cannot prepare " + file, brief(e), "export the bundle again");
  }
  // The dynamic-batch engine compiles now; a static-batch one compiles each size on first use.
  if (!m.static_batch) (void)m.request(0);
  compile_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Engine::~Engine() = default;

std::vector<float> Engine::infer(const float* batch, int n) {
  Impl& m = *impl_;
  const size_t image = static_cast<size_t>(3) * m.size * m.size;
  // Below the engine's smallest batch: pad with copies of the last image, drop their outputs.
  const int run = std::max(n, m.batch_min);
  std::vector<float> padded;
  const float* data = batch;
  if (run != n) {
    padded.assign(batch, batch + image * n);
    for (int i = n; i < run; ++i) padded.insert(padded.end(), batch + image * (n - 1), batch + image * n);
    data = padded.data();
  }
  ov::Tensor input(ov::element::f32, ov::Shape{static_cast<size_t>(run), 3, static_cast<size_t>(m.size), static_cast<size_t>(m.size)},
                   const_cast<float*>(data));
  ov::Tensor out;
  ov::InferRequest& request = m.request(run);
  try {
    request.set_input_tensor(input);
    request.infer();
    out = request.get_output_tensor(m.output_index);
  } catch (const std::exception& e) {
    throw UserError("OpenVINO inference failed", brief(e));
  }
  const ov::Shape s = out.get_shape();
  if (s.size() != 2 || s[0] != static_cast<size_t>(run) || s[1] != static_cast<size_t>(m.classes) || out.get_element_type() != ov::element::f32) {
    std::string shown;
    for (size_t d : s) shown += (shown.empty() ? "" : ", ") + std::to_string(d);
    throw UserError("the engine returned shape (" + shown + ")", "the manifest says " + std::to_string(m.classes) + " classes",
                    "export the bundle again");
  }
  const float* o = out.data<const float>();
  return std::vector<float>(o, o + static_cast<size_t>(n) * m.classes);
}

}  // namespace coatnet

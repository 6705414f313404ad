#include "engine.hpp"

#include <chrono>
#include <cstring>
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
  ov::CompiledModel compiled;
  ov::InferRequest request;
  size_t output_index = 0;
  int size = 0, classes = 0, batch_min = 1, batch_max = 1;
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
  runs_ = ir ? "openvino on model.xml (" + hint + ")"
             : "openvino on model.onnx (" + hint + ", OpenVINO's ONNX reader; the bundle's own runtime is " +
                   (b.target == "onnx" ? std::string("onnxruntime") : b.target) + ")";
  substitute_ = !ir;
  Impl& m = *impl_;
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
    if (shape.rank().is_static() && shape.rank().get_length() == 4 && shape[0].is_static()) {
      shape[0] = ov::Dimension::dynamic();
      model->reshape(shape);
    }
    ov::AnyMap config = {ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::hint::inference_precision(precision)};
    if (threads > 0) config.emplace(ov::inference_num_threads(threads));
    m.compiled = m.core.compile_model(model, "CPU", config);
    m.request = m.compiled.create_infer_request();
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    throw UserError(b.where() + "OpenVINO cannot compile " + file + " for the CPU", brief(e), "export the bundle again");
  }
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
  try {
    m.request.set_input_tensor(input);
    m.request.infer();
    out = m.request.get_output_tensor(m.output_index);
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

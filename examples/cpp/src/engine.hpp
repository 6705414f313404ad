// The bundle's model on OpenVINO's C++ runtime, with the settings coatnet_deploy's OpenVINORunner
// uses: the manifest's inference precision pinned (f32 by default), LATENCY hint, dynamic batch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"

namespace coatnet {

// OpenVINO's build number, e.g. "2026.4.1-...".
std::string openvino_version();

// Targets this app runs, for messages.
const char* runnable_targets();

// UserError naming the targets it can run when `b.target` is not one of them.
void check_target(const Bundle& b);

class Engine {
 public:
  // threads: 0 = OpenVINO's default. Loads and compiles the model (the bundle is verified already).
  Engine(const Bundle& b, int threads);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // n images (n x 3 x S x S float32, n <= batch_max) -> n x num_classes logits.
  std::vector<float> infer(const float* batch, int n);

  // What runs, e.g. "openvino on model.xml (f32)".
  const std::string& runs() const { return runs_; }
  // True when the engine is not the bundle's own runtime (an onnx/onnxruntime bundle).
  bool substitute() const { return substitute_; }
  double compile_ms() const { return compile_ms_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string runs_;
  bool substitute_ = false;
  double compile_ms_ = 0;
};

}  // namespace coatnet

// Classify one image with a coatnet-deploy bundle's model.onnx through the ONNX Runtime C++ API.
//
// Deliberately small: no JSON or image library. The image must already be a binary PPM (P6) of
// exactly SIZE x SIZE pixels (resize + center crop as manifest.json "preprocess" says, e.g. with
// the Python example's preprocess()); mean/std come from the manifest and are passed as arguments.
//
//   classify BUNDLE/model.onnx image.ppm SIZE MEAN_R MEAN_G MEAN_B STD_R STD_G STD_B [TOPK]
//
// Not built or tested in this repository (no ONNX Runtime C/C++ headers on the build machine):
// see README.md.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

static std::vector<unsigned char> read_ppm(const char* path, int size) {
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  f >> magic >> w >> h >> maxval;
  f.get();  // the single whitespace byte before the pixels
  if (!f || magic != "P6" || w != size || h != size || maxval != 255)
    throw std::runtime_error(std::string(path) + ": expected an 8-bit binary PPM of " + std::to_string(size) + "x" +
                             std::to_string(size) + " pixels");
  std::vector<unsigned char> rgb(static_cast<size_t>(size) * size * 3);
  f.read(reinterpret_cast<char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
  if (!f) throw std::runtime_error(std::string(path) + ": truncated");
  return rgb;
}

int main(int argc, char** argv) {
  if (argc < 10) {
    std::cerr << "usage: classify model.onnx image.ppm SIZE MEAN_R MEAN_G MEAN_B STD_R STD_G STD_B [TOPK]\n";
    return 1;
  }
  try {
    const int size = std::stoi(argv[3]);
    const float mean[3] = {std::stof(argv[4]), std::stof(argv[5]), std::stof(argv[6])};
    const float stdev[3] = {std::stof(argv[7]), std::stof(argv[8]), std::stof(argv[9])};
    const size_t topk = argc > 10 ? std::stoul(argv[10]) : 5;

    // HWC uint8 -> CHW float32, (x / 255 - mean) / std: the same order of operations as the exporter.
    const std::vector<unsigned char> rgb = read_ppm(argv[2], size);
    const size_t plane = static_cast<size_t>(size) * size;
    std::vector<float> input(3 * plane);
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) input[c * plane + i] = (rgb[i * 3 + c] / 255.0f - mean[c]) / stdev[c];

    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "classify");
    Ort::SessionOptions options;
    Ort::Session session(env, argv[1], options);
    Ort::AllocatorWithDefaultOptions alloc;
    Ort::AllocatedStringPtr in_name = session.GetInputNameAllocated(0, alloc);
    Ort::AllocatedStringPtr out_name = session.GetOutputNameAllocated(0, alloc);

    const std::array<int64_t, 4> shape{1, 3, size, size};
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value tensor = Ort::Value::CreateTensor<float>(mem, input.data(), input.size(), shape.data(), shape.size());
    const char* in_names[] = {in_name.get()};
    const char* out_names[] = {out_name.get()};
    std::vector<Ort::Value> out = session.Run(Ort::RunOptions{nullptr}, in_names, &tensor, 1, out_names, 1);

    const float* logits = out[0].GetTensorData<float>();
    const size_t classes = out[0].GetTensorTypeAndShapeInfo().GetElementCount();
    // Softmax in double, max-subtracted so large logits cannot overflow.
    const double top = *std::max_element(logits, logits + classes);
    std::vector<double> prob(classes);
    double sum = 0.0;
    for (size_t i = 0; i < classes; ++i) sum += prob[i] = std::exp(logits[i] - top);
    std::vector<size_t> order(classes);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prob[a] > prob[b]; });
    for (size_t k = 0; k < std::min(topk, classes); ++k)
      std::printf("%8.4f  %5zu  class_%zu\n", prob[order[k]] / sum, order[k], order[k]);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// manifest.preprocess -> the model input, as coatnet_deploy.preprocess.preprocess_image computes it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image.hpp"
#include "resample.hpp"

namespace coatnet {

struct PreprocessConfig {
  int resize = 0;               // shorter side after resizing ("center"); both sides ("squash"); longer side ("border")
  int crop = 0;                 // square model input
  double crop_pct = 0.95;       // informational once resize is set
  std::string interpolation = "bicubic";
  std::string crop_mode = "center";  // center | squash | border (timm's eval crop modes)
  double mean[3] = {0.5, 0.5, 0.5};
  double std[3] = {0.5, 0.5, 0.5};
  Filter filter = Filter::bicubic;

  // Validates like PreprocessConfig.from_dict; `where` prefixes error messages (e.g. the bundle).
  static PreprocessConfig from_json(const nlohmann::json& d, const std::string& where);
};

// RGB image -> crop x crop uint8 RGB, resized and cropped as the config says.
Image resized_and_cropped(const Image& rgb, const PreprocessConfig& cfg);

// uint8 RGB (crop x crop) -> float32 CHW, x / 255 then (x - mean) / std in float32.
void normalize_chw(const Image& rgb, const PreprocessConfig& cfg, float* out);

// Image file -> float32 CHW (3 x crop x crop) appended to `out`; returns the uint8 crop too.
Image preprocess_file(const std::string& path, const PreprocessConfig& cfg, std::vector<float>& out);

}  // namespace coatnet

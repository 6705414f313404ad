// Image file bytes -> decode (JPEG / PNG), EXIF/XMP orientation, Pillow's mode conversions ->
// resize + crop by a manifest's preprocess block -> the float32 CHW tensor: the whole path an image
// from a camera takes through coatnet-classify before the engine.
#include <cmath>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "image.hpp"
#include "preprocess.hpp"

using namespace coatnet;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The preprocess settings come from a hash of the last bytes and the size, so every byte stays
  // the file's and a mutation that changes the size also changes the crop.
  const uint64_t h = coatnet_fuzz::fnv1a(data + (size > 16 ? size - 16 : 0), size > 16 ? 16 : size) ^ size;
  static const char* const modes[] = {"center", "squash", "border"};
  static const char* const filters[] = {"bicubic", "bilinear", "nearest"};
  const int crop = 1 + static_cast<int>(h % 48);
  nlohmann::json pre = {{"crop", crop},
                        {"resize", crop + static_cast<int>((h >> 8) % 24)},
                        {"crop_mode", modes[(h >> 16) % 3]},
                        {"interpolation", filters[(h >> 20) % 3]},
                        {"mean", {0.485, 0.456, 0.406}},
                        {"std", {0.229, 0.224, 0.225}}};
  const PreprocessConfig cfg = PreprocessConfig::from_json(pre, "fuzz: ");
  const std::vector<uint8_t> bytes(data, data + size);
  coatnet_fuzz::accepts_or_refuses([&] {
    Image rgb = decode_image_rgb(bytes, "fuzz-input");
    if (rgb.channels != 3 || rgb.width < 1 || rgb.height < 1 ||
        rgb.pixels.size() != static_cast<size_t>(rgb.width) * rgb.height * 3)
      coatnet_fuzz::finding("decoded image with inconsistent size");
    Image cropped = resized_and_cropped(rgb, cfg);
    if (cropped.width != cfg.crop || cropped.height != cfg.crop || cropped.channels != 3)
      coatnet_fuzz::finding("preprocessing did not give a crop x crop RGB image");
    std::vector<float> tensor(static_cast<size_t>(3) * cfg.crop * cfg.crop);
    normalize_chw(cropped, cfg, tensor.data());
    for (float v : tensor)
      if (!std::isfinite(v)) coatnet_fuzz::finding("non-finite value in the tensor");
  });
  return 0;
}

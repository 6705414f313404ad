// Random sizes through the resampler: Pillow-exact resize (whole image or a box inside it, every
// filter, up and down by any factor), crop with regions that leave the image, pad, and the three
// crop modes of preprocess on a random image -- the arithmetic a camera of any resolution reaches.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_common.hpp"
#include "preprocess.hpp"
#include "resample.hpp"

using namespace coatnet;

namespace {

void expect(const Image& im, int w, int h, int c, const char* what) {
  if (im.width != w || im.height != h || im.channels != c || im.pixels.size() != static_cast<size_t>(w) * h * c)
    coatnet_fuzz::finding(std::string(what) + " returned an image of the wrong size");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  Image in;
  in.width = fdp.ConsumeIntegralInRange<int>(1, 320);
  in.height = fdp.ConsumeIntegralInRange<int>(1, 320);
  in.channels = fdp.ConsumeBool() ? 3 : 1;
  const int out_w = fdp.ConsumeIntegralInRange<int>(1, 400);
  const int out_h = fdp.ConsumeIntegralInRange<int>(1, 400);
  const Filter filter = static_cast<Filter>(fdp.ConsumeIntegralInRange<int>(0, 2));
  const int use_box = fdp.ConsumeIntegralInRange<int>(0, 2);
  // A box inside the image, as Pillow requires of Image.resize(box=...): x0 < x1 within [0, width].
  float x0 = fdp.ConsumeFloatingPointInRange<float>(0.0f, static_cast<float>(in.width));
  float x1 = fdp.ConsumeFloatingPointInRange<float>(0.0f, static_cast<float>(in.width));
  float y0 = fdp.ConsumeFloatingPointInRange<float>(0.0f, static_cast<float>(in.height));
  float y1 = fdp.ConsumeFloatingPointInRange<float>(0.0f, static_cast<float>(in.height));
  if (x0 > x1) std::swap(x0, x1);
  if (y0 > y1) std::swap(y0, y1);
  const int cl = fdp.ConsumeIntegralInRange<int>(-400, 400), ct = fdp.ConsumeIntegralInRange<int>(-400, 400);
  const int cw = fdp.ConsumeIntegralInRange<int>(0, 400), ch = fdp.ConsumeIntegralInRange<int>(0, 400);
  const int crop_size = fdp.ConsumeIntegralInRange<int>(1, 96);
  const int resize_to = crop_size + fdp.ConsumeIntegralInRange<int>(0, 64);
  const int mode = fdp.ConsumeIntegralInRange<int>(0, 2);
  // The pixels: what is left of the input, repeated (a flat image when nothing is left).
  const std::vector<uint8_t> rest = fdp.ConsumeRemainingBytes<uint8_t>();
  in.pixels.resize(static_cast<size_t>(in.width) * in.height * in.channels);
  for (size_t i = 0; i < in.pixels.size(); ++i) in.pixels[i] = rest.empty() ? 128 : rest[i % rest.size()];

  if (use_box == 1 && x1 > x0 && y1 > y0) {
    expect(resize(in, out_w, out_h, filter, Box{x0, y0, x1, y1}), out_w, out_h, in.channels, "resize(box)");
  } else {
    expect(resize(in, out_w, out_h, filter), out_w, out_h, in.channels, "resize");
  }
  expect(crop(in, cl, ct, cl + cw, ct + ch), cw, ch, in.channels, "crop");
  const uint8_t fill[3] = {1, 2, 3};
  expect(pad(in, cl / 4, ct / 4, cw, ch, fill), cw, ch, in.channels, "pad");

  // preprocess works on RGB; a gray image goes in as three equal channels, as to_rgb makes it.
  Image rgb = in;
  if (in.channels == 1) {
    rgb.channels = 3;
    rgb.pixels.resize(in.pixels.size() * 3);
    for (size_t i = 0; i < in.pixels.size(); ++i) rgb.pixels[3 * i] = rgb.pixels[3 * i + 1] = rgb.pixels[3 * i + 2] = in.pixels[i];
  }
  static const char* const modes[] = {"center", "squash", "border"};
  static const char* const filters[] = {"nearest", "bilinear", "bicubic"};
  nlohmann::json pre = {{"crop", crop_size}, {"resize", resize_to}, {"crop_mode", modes[mode]},
                        {"interpolation", filters[static_cast<int>(filter)]}};
  coatnet_fuzz::accepts_or_refuses([&] {
    const PreprocessConfig cfg = PreprocessConfig::from_json(pre, "fuzz: ");
    expect(resized_and_cropped(rgb, cfg), crop_size, crop_size, 3, "resized_and_cropped");
  });
  return 0;
}

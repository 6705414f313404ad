#include "preprocess.hpp"

#include <cmath>
#include <set>

#include "error.hpp"

namespace coatnet {
namespace {

const std::set<std::string> kKeys = {"resize", "crop", "crop_pct", "interpolation", "mean", "std", "crop_mode"};

bool is_pos_int(const nlohmann::json& v) {
  return (v.is_number_integer() || v.is_number_unsigned()) && v.get<long long>() > 0 && v.get<long long>() < (1 << 20);
}

void triple(const nlohmann::json& d, const char* key, double out[3], const std::string& where) {
  if (!d.contains(key)) return;
  const nlohmann::json& v = d.at(key);
  std::string shown = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!v.is_array() || (v.size() != 3 && v.size() != 1))
    throw UserError(where + "preprocess." + key + " is " + shown, "it must be 3 numbers (R, G, B)", "export the bundle again");
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json& x = v.at(v.size() == 1 ? 0 : i);
    if (!x.is_number() || !std::isfinite(x.get<double>()))
      throw UserError(where + "preprocess." + key + " is " + shown, "it must be 3 finite numbers (R, G, B)", "export the bundle again");
    out[i] = x.get<double>();
  }
}

}  // namespace

PreprocessConfig PreprocessConfig::from_json(const nlohmann::json& d, const std::string& where) {
  PreprocessConfig c;
  if (!d.is_object())
    throw UserError(where + "preprocess settings are not a mapping", "expected keys: crop, resize, crop_pct, interpolation, mean, std",
                    "export the bundle again");
  for (auto it = d.begin(); it != d.end(); ++it)
    if (!kKeys.count(it.key()))
      throw UserError(where + "unknown preprocess key " + it.key(),
                      "valid keys are: resize, crop, mean, std, interpolation, crop_pct, crop_mode");
  if (!d.contains("crop")) throw UserError(where + "preprocess settings have no 'crop'", "the input size is required");
  for (const char* key : {"crop", "resize"})
    if (d.contains(key) && !d.at(key).is_null() && !is_pos_int(d.at(key)))
      throw UserError(where + "preprocess." + key + " is " + d.at(key).dump(), "it must be a positive integer (pixels)");
  if (d.at("crop").is_null()) throw UserError(where + "preprocess.crop is null", "it must be a positive integer (pixels)");
  c.crop = d.at("crop").get<int>();
  bool has_resize = d.contains("resize") && !d.at("resize").is_null();
  bool has_pct = d.contains("crop_pct") && !d.at("crop_pct").is_null();
  if (has_pct) {
    const nlohmann::json& p = d.at("crop_pct");
    if (!p.is_number() || !(p.get<double>() > 0.0 && p.get<double>() <= 1.0))
      throw UserError(where + "preprocess.crop_pct is " + p.dump(), "it must be a number in (0, 1]");
    c.crop_pct = p.get<double>();
  } else {
    // Older manifests state only resize and crop; crop_pct is then what they imply.
    c.crop_pct = has_resize ? std::min(1.0, static_cast<double>(c.crop) / d.at("resize").get<int>()) : 0.95;
  }
  if (has_resize) {
    c.resize = d.at("resize").get<int>();
  } else {
    // resize = floor(crop / crop_pct) must stay a pixel count (fuzz_manifest: crop_pct 1e-300 overflowed int).
    const double implied = std::floor(c.crop / c.crop_pct);
    if (!(implied < (1 << 20)))
      throw UserError(where + "preprocess.crop_pct is " + d.at("crop_pct").dump(),
                      "crop / crop_pct gives a resize of " + std::to_string(implied) + " pixels", "set preprocess.resize, or a crop_pct near crop / resize");
    c.resize = static_cast<int>(implied);
  }
  if (d.contains("interpolation")) {
    const nlohmann::json& v = d.at("interpolation");
    c.interpolation = v.is_string() ? v.get<std::string>() : v.dump();
  }
  if (c.interpolation == "bicubic")
    c.filter = Filter::bicubic;
  else if (c.interpolation == "bilinear")
    c.filter = Filter::bilinear;
  else if (c.interpolation == "nearest")
    c.filter = Filter::nearest;
  else
    throw UserError(where + "preprocess.interpolation is '" + c.interpolation + "'", "it is not a known interpolation",
                    "use one of: bicubic, bilinear, nearest");
  if (d.contains("crop_mode") && !d.at("crop_mode").is_null()) {
    const nlohmann::json& v = d.at("crop_mode");
    c.crop_mode = v.is_string() ? v.get<std::string>() : v.dump();
    if (c.crop_mode != "center" && c.crop_mode != "squash" && c.crop_mode != "border")
      throw UserError(where + "preprocess.crop_mode is '" + c.crop_mode + "'", "it is not a known crop mode",
                      "use one of: center, squash, border");
  }
  if (c.resize < c.crop)
    throw UserError(where + "preprocess.resize (" + std::to_string(c.resize) + ") is smaller than preprocess.crop (" +
                        std::to_string(c.crop) + ")",
                    "the center crop must fit inside the resized image", "set resize >= crop");
  triple(d, "mean", c.mean, where);
  triple(d, "std", c.std, where);
  for (double s : c.std)
    if (!(s > 0.0)) throw UserError(where + "preprocess.std has " + std::to_string(s), "every std must be > 0");
  return c;
}

namespace {

// Python's round() on a float: half to even.
long long round_half_even(double v) { return static_cast<long long>(std::nearbyint(v)); }

// torchvision CenterCrop offset: int(round((size - crop) / 2.0)).
int center_offset(int size, int crop) { return static_cast<int>(round_half_even((size - crop) / 2.0)); }

// Resize(int) + CenterCrop, as preprocess._resized_center_crop (with its extreme-aspect branch).
Image center(const Image& img, const PreprocessConfig& cfg) {
  const long long w = img.width, h = img.height, r = cfg.resize;
  // torchvision.transforms.Resize(int): shorter side -> resize, longer side truncated (int()).
  int nw, nh;
  if (w <= h) {
    nw = cfg.resize;
    nh = static_cast<int>(static_cast<double>(r * h) / static_cast<double>(w));
  } else {
    nw = static_cast<int>(static_cast<double>(r * w) / static_cast<double>(h));
    nh = cfg.resize;
  }
  const int left = center_offset(nw, cfg.crop), top = center_offset(nh, cfg.crop);
  // Beyond 8x the resize, resample only the kept region (same source mapping, far less memory).
  if (std::max(nw, nh) <= 8 * cfg.resize) {
    Image resized = (nw == img.width && nh == img.height) ? img : resize(img, nw, nh, cfg.filter);
    return crop(resized, left, top, left + cfg.crop, top + cfg.crop);
  }
  const double sx = static_cast<double>(w) / nw, sy = static_cast<double>(h) / nh;
  // computed in double as Python does, then held as floats as Pillow does
  Box box{static_cast<float>(left * sx), static_cast<float>(top * sy), static_cast<float>((left + cfg.crop) * sx),
          static_cast<float>((top + cfg.crop) * sy)};
  return resize(img, cfg.crop, cfg.crop, cfg.filter, box);
}

// timm "squash": both sides to `resize`, then CenterCrop.
Image squash(const Image& img, const PreprocessConfig& cfg) {
  Image resized = resize(img, cfg.resize, cfg.resize, cfg.filter);
  const int off = center_offset(cfg.resize, cfg.crop);
  return crop(resized, off, off, off + cfg.crop, off + cfg.crop);
}

// timm "border": ResizeKeepRatio(longest=1) then CenterCropOrPad with fill = round(255 * mean).
Image border(const Image& img, const PreprocessConfig& cfg) {
  const double ratio_h = static_cast<double>(img.height) / cfg.resize, ratio_w = static_cast<double>(img.width) / cfg.resize;
  const double ratio = std::max(ratio_h, ratio_w) * 1.0 + std::min(ratio_h, ratio_w) * 0.0;
  // max(1, ...): where timm would ask for a 0-pixel side (and fail), keep one pixel, as preprocess.py
  const int nh = std::max(1, static_cast<int>(round_half_even(img.height / ratio)));
  const int nw = std::max(1, static_cast<int>(round_half_even(img.width / ratio)));
  Image resized = (nw == img.width && nh == img.height) ? img : resize(img, nw, nh, cfg.filter);
  int W = nw, H = nh;
  if (cfg.crop > W || cfg.crop > H) {
    uint8_t fill[3];
    for (int c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(round_half_even(255.0 * cfg.mean[c]) & 0xff);
    const int pl = cfg.crop > W ? (cfg.crop - W) / 2 : 0, pt = cfg.crop > H ? (cfg.crop - H) / 2 : 0;
    const int pr = cfg.crop > W ? (cfg.crop - W + 1) / 2 : 0, pb = cfg.crop > H ? (cfg.crop - H + 1) / 2 : 0;
    resized = pad(resized, pl, pt, W + pl + pr, H + pt + pb, fill);
    W = resized.width;
    H = resized.height;
    if (W == cfg.crop && H == cfg.crop) return resized;
  }
  const int top = center_offset(H, cfg.crop), left = center_offset(W, cfg.crop);
  return crop(resized, left, top, left + cfg.crop, top + cfg.crop);
}

}  // namespace

Image resized_and_cropped(const Image& rgb, const PreprocessConfig& cfg) {
  if (cfg.crop_mode == "squash") return squash(rgb, cfg);
  if (cfg.crop_mode == "border") return border(rgb, cfg);
  return center(rgb, cfg);
}

void normalize_chw(const Image& rgb, const PreprocessConfig& cfg, float* out) {
  const size_t plane = static_cast<size_t>(rgb.width) * rgb.height;
  for (int c = 0; c < 3; ++c) {
    // float32 throughout, in torchvision's order: ToTensor (x / 255) then Normalize.
    const float mean = static_cast<float>(cfg.mean[c]), std = static_cast<float>(cfg.std[c]);
    for (size_t i = 0; i < plane; ++i) {
      float x = static_cast<float>(rgb.pixels[i * 3 + c]) / 255.0f;
      out[c * plane + i] = (x - mean) / std;
    }
  }
}

Image preprocess_file(const std::string& path, const PreprocessConfig& cfg, std::vector<float>& out) {
  Image rgb = load_image_rgb(path);
  Image cropped = resized_and_cropped(rgb, cfg);
  size_t at = out.size();
  out.resize(at + static_cast<size_t>(3) * cfg.crop * cfg.crop);
  normalize_chw(cropped, cfg, out.data() + at);
  return cropped;
}

}  // namespace coatnet

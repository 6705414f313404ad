// Decoding JPEG and PNG into 8-bit RGB exactly as coatnet_deploy.preprocess.load_image does
// with Pillow: EXIF orientation, grayscale, transparency on white, palettes, 16-bit samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace coatnet {

// Interleaved 8-bit pixels, row-major; channels is 1 (gray) or 3 (RGB) after decoding.
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;

  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * channels; }
};

// Same limits as coatnet_deploy.preprocess (MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO). The fuzz build
// (examples/cpp/fuzz, the libFuzzer convention's FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) takes
// 4 Mpixel: the same checks, but a declared 9000x9000 picture would spend the fuzzer's time in
// zlib instead of in this code.
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr long long kMaxImagePixels = 1LL << 22;
#else
constexpr long long kMaxImagePixels = 89478485;
#endif
constexpr int kMaxAspectRatio = 100;

// Image file -> RGB Image (channels == 3), EXIF orientation applied. Throws UserError naming
// `path` for a missing, empty, unreadable, truncated, unsupported or too large image.
Image load_image_rgb(const std::string& path);

// The same from the file's bytes; `shown` names it in messages. What the fuzz target calls.
Image decode_image_rgb(const std::vector<uint8_t>& data, const std::string& shown);

// EXIF/XMP orientation (1..8, 1 = as stored) from an APP1-style Exif payload ("Exif\0\0" + TIFF,
// or bare TIFF) and an XMP packet, as Pillow's Image.getexif reads them; 1 when absent or malformed.
int exif_orientation(const std::vector<uint8_t>& exif, const std::string& xmp);

// Pillow's Image.transpose for the EXIF orientations (2..8); 1 leaves the image as it is.
Image oriented(const Image& img, int orientation);

}  // namespace coatnet

// Image resizing with Pillow's arithmetic (Image.resize with BICUBIC, BILINEAR, NEAREST), so the
// C++ app feeds the engine the same uint8 pixels as coatnet_deploy.preprocess.
#pragma once

#include "image.hpp"

namespace coatnet {

enum class Filter { nearest, bilinear, bicubic };

// The source region a resize reads, in source pixels (Pillow's `box`); the whole image by default.
// Single precision on purpose: Pillow holds the box as C floats, and its width as a float
// difference, which moves sample positions enough to change pixels.
struct Box {
  float x0, y0, x1, y1;
};

// in -> out_w x out_h. Bilinear / bicubic: a separable filter, horizontal pass then vertical,
// whose support widens with the downscale factor, with 22-bit fixed-point weights and rounding
// to uint8 after each pass. Nearest: the source pixel under each output pixel's centre.
Image resize(const Image& in, int out_w, int out_h, Filter filter, const Box& box);
Image resize(const Image& in, int out_w, int out_h, Filter filter);

// Pillow's Image.crop: the region [left, right) x [top, bottom); pixels outside the image are 0.
Image crop(const Image& in, int left, int top, int right, int bottom);

// Pillow's ImageOps.expand / a constant-colour canvas: `in` pasted at (left, top) on a
// width x height canvas filled with `fill` (one value per channel).
Image pad(const Image& in, int left, int top, int width, int height, const uint8_t fill[3]);

}  // namespace coatnet

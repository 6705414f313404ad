// Written from the description of Pillow's resampling (a separable convolution whose kernel is
// stretched by the scale factor when downscaling, normalised, then quantised to fixed point),
// and checked against Pillow pixel for pixel by tests/test_cpp_app.py.

#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace coatnet {
namespace {

// Weights are quantised to this many fractional bits; 8-bit samples times weights, summed over
// the kernel, must fit a 32-bit accumulator with 2 bits to spare: 32 - 8 - 2.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

// Keys' cubic convolution kernel with a = -0.5 (Pillow's BICUBIC).
double bicubic(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

struct Kernel {
  int size = 0;                 // taps allocated per output pixel
  std::vector<int> first;       // first source index per output pixel
  std::vector<int> count;       // taps used per output pixel
  std::vector<int32_t> weight;  // out_size x size fixed-point weights
};

// For each output pixel along one axis: which source pixels it reads and with which weights.
Kernel weights_for(int in_size, float in0, float in1, int out_size, Filter filter) {
  double (*fn)(double) = filter == Filter::bicubic ? bicubic : bilinear;
  const double support_base = filter == Filter::bicubic ? 2.0 : 1.0;
  const float extent = in1 - in0;  // a float difference, as in Pillow
  const double scale = static_cast<double>(extent) / out_size;
  // Downscaling stretches the kernel over `scale` source pixels (an area filter); upscaling
  // interpolates with the kernel as it is.
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = support_base * filterscale;
  Kernel k;
  k.size = static_cast<int>(std::ceil(support)) * 2 + 1;
  k.first.resize(out_size);
  k.count.resize(out_size);
  k.weight.assign(static_cast<size_t>(out_size) * k.size, 0);
  std::vector<double> w(k.size);
  for (int i = 0; i < out_size; ++i) {
    const double center = in0 + (i + 0.5) * scale;
    const double inv = 1.0 / filterscale;
    // Source pixel j covers [j, j+1), its centre at j + 0.5; taps within `support` of `center`.
    int lo = static_cast<int>(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = std::max(0, std::min(hi - lo, k.size));
    double total = 0.0;
    for (int t = 0; t < n; ++t) {
      w[t] = fn((t + lo - center + 0.5) * inv);
      total += w[t];
    }
    for (int t = 0; t < n; ++t) {
      double v = total != 0.0 ? w[t] / total : w[t];
      // round half away from zero
      k.weight[static_cast<size_t>(i) * k.size + t] =
          static_cast<int32_t>(v < 0.0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    k.first[i] = lo;
    k.count[i] = n;
  }
  return k;
}

inline uint8_t to_u8(int64_t acc) {
  int64_t v = acc >> kPrecisionBits;  // floor: the half was added up front
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over source rows [row0, row0 + rows).
Image horizontal(const Image& in, int row0, int rows, int out_w, const Kernel& k) {
  const int C = in.channels;
  Image out;
  out.width = out_w;
  out.height = rows;
  out.channels = C;
  out.pixels.resize(static_cast<size_t>(out_w) * rows * C);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in.row(row0 + y);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out_w; ++x) {
      const int32_t* w = &k.weight[static_cast<size_t>(x) * k.size];
      const uint8_t* s = src + static_cast<size_t>(k.first[x]) * C;
      for (int c = 0; c < C; ++c) {
        int64_t acc = int64_t{1} << (kPrecisionBits - 1);
        for (int t = 0; t < k.count[x]; ++t) acc += static_cast<int64_t>(s[static_cast<size_t>(t) * C + c]) * w[t];
        dst[static_cast<size_t>(x) * C + c] = to_u8(acc);
      }
    }
  }
  return out;
}

// Vertical pass; `row0` is the source row that in.row(0) holds.
Image vertical(const Image& in, int row0, int out_h, const Kernel& k) {
  const int C = in.channels;
  const size_t stride = static_cast<size_t>(in.width) * C;
  Image out;
  out.width = in.width;
  out.height = out_h;
  out.channels = C;
  out.pixels.resize(stride * out_h);
  for (int y = 0; y < out_h; ++y) {
    const int32_t* w = &k.weight[static_cast<size_t>(y) * k.size];
    const uint8_t* s = in.row(k.first[y] - row0);
    uint8_t* dst = out.row(y);
    for (size_t i = 0; i < stride; ++i) {
      int64_t acc = int64_t{1} << (kPrecisionBits - 1);
      for (int t = 0; t < k.count[y]; ++t) acc += static_cast<int64_t>(s[static_cast<size_t>(t) * stride + i]) * w[t];
      dst[i] = to_u8(acc);
    }
  }
  return out;
}

// Which pass runs first changes the uint8 rounding in between. Pillow 13 runs the vertical pass
// first when the height loses more than twice as many pixels as the width (measured against
// Pillow 13.0 on 1,400 random size combinations); earlier Pillow always went horizontal first.
bool vertical_first(int in_w, int in_h, int out_w, int out_h) {
  return out_h < in_h && static_cast<long long>(in_h - out_h) > 2LL * (in_w - out_w);
}

int coord(double v) { return v < 0.0 ? -1 : static_cast<int>(v); }

Image nearest(const Image& in, int out_w, int out_h, const Box& box) {
  const int C = in.channels;
  const float ex = box.x1 - box.x0, ey = box.y1 - box.y0;
  const double sx = static_cast<double>(ex) / out_w, sy = static_cast<double>(ey) / out_h;
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.channels = C;
  out.pixels.assign(static_cast<size_t>(out_w) * out_h * C, 0);
  // Source column per output column: the pixel under the output pixel's centre, stepped by
  // repeated addition as Pillow's affine scaler does (the sum rounds differently from i * sx).
  std::vector<int> xs(out_w, -1);
  double xo = static_cast<double>(box.x0) + sx * 0.5;
  for (int x = 0; x < out_w; ++x, xo += sx) {
    int xi = coord(xo);
    if (xi >= 0 && xi < in.width) xs[x] = xi;
  }
  double yo = static_cast<double>(box.y0) + sy * 0.5;
  for (int y = 0; y < out_h; ++y, yo += sy) {
    int yi = coord(yo);
    if (yi < 0 || yi >= in.height) continue;
    const uint8_t* src = in.row(yi);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out_w; ++x)
      if (xs[x] >= 0) std::memcpy(dst + static_cast<size_t>(x) * C, src + static_cast<size_t>(xs[x]) * C, C);
  }
  return out;
}

}  // namespace

Image resize(const Image& in, int out_w, int out_h, Filter filter, const Box& box) {
  const bool whole = box.x0 == 0.0f && box.y0 == 0.0f && box.x1 == in.width && box.y1 == in.height;
  if (out_w == in.width && out_h == in.height && whole) return in;
  if (filter == Filter::nearest) return nearest(in, out_w, out_h, box);
  const bool need_h = out_w != in.width || box.x0 != 0.0f || box.x1 != out_w;
  const bool need_v = out_h != in.height || box.y0 != 0.0f || box.y1 != out_h;
  Kernel kh = weights_for(in.width, box.x0, box.x1, out_w, filter);
  Kernel kv = weights_for(in.height, box.y0, box.y1, out_h, filter);
  if (need_h && need_v && vertical_first(in.width, in.height, out_w, out_h))
    return horizontal(vertical(in, 0, out_h, kv), 0, out_h, out_w, kh);
  // The vertical pass reads only rows [first used, last used]: the horizontal pass skips the rest.
  const int row0 = kv.first[0];
  const int row1 = kv.first[out_h - 1] + kv.count[out_h - 1];
  Image cur;
  int cur_row0 = 0;
  if (need_h) {
    cur = horizontal(in, need_v ? row0 : 0, need_v ? row1 - row0 : in.height, out_w, kh);
    cur_row0 = need_v ? row0 : 0;
  }
  const Image& src = need_h ? cur : in;
  if (need_v) return vertical(src, cur_row0, out_h, kv);
  return need_h ? cur : in;
}

Image resize(const Image& in, int out_w, int out_h, Filter filter) {
  return resize(in, out_w, out_h, filter, Box{0.0f, 0.0f, static_cast<float>(in.width), static_cast<float>(in.height)});
}

Image crop(const Image& in, int left, int top, int right, int bottom) {
  const uint8_t zero[3] = {0, 0, 0};
  Image out;
  out.width = std::max(0, right - left);
  out.height = std::max(0, bottom - top);
  out.channels = in.channels;
  out.pixels.assign(static_cast<size_t>(out.width) * out.height * in.channels, zero[0]);
  for (int y = 0; y < out.height; ++y) {
    int sy = top + y;
    if (sy < 0 || sy >= in.height) continue;
    for (int x = 0; x < out.width; ++x) {
      int sx = left + x;
      if (sx < 0 || sx >= in.width) continue;
      std::memcpy(out.row(y) + static_cast<size_t>(x) * in.channels, in.row(sy) + static_cast<size_t>(sx) * in.channels,
                  in.channels);
    }
  }
  return out;
}

Image pad(const Image& in, int left, int top, int width, int height, const uint8_t fill[3]) {
  Image out;
  out.width = width;
  out.height = height;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(width) * height * in.channels);
  for (size_t i = 0; i < out.pixels.size(); ++i) out.pixels[i] = fill[i % in.channels];
  for (int y = 0; y < in.height; ++y) {
    int dy = top + y;
    if (dy < 0 || dy >= height) continue;
    for (int x = 0; x < in.width; ++x) {
      int dx = left + x;
      if (dx < 0 || dx >= width) continue;
      std::memcpy(out.row(dy) + static_cast<size_t>(dx) * in.channels, in.row(y) + static_cast<size_t>(x) * in.channels,
                  in.channels);
    }
  }
  return out;
}

}  // namespace coatnet

// JPEG (libjpeg-turbo) and PNG (libpng) decoding with Pillow's conversions to RGB.
//
// What coatnet_deploy.preprocess does, and so what this file reproduces:
//   - EXIF orientation (JPEG APP1 "Exif", PNG eXIf or "Raw profile type exif" text, else an XMP
//     tiff:Orientation) is applied first; a malformed EXIF block leaves the image as stored.
//   - Grayscale is replicated to RGB; 1/2/4-bit gray is scaled to 8 bits (x255/(2^b-1)).
//   - 16-bit gray is scaled with (v*255 + 32767) / 65535; other 16-bit PNGs keep the high byte
//     (Pillow's 16-bit RGB/RGBA/LA readers).
//   - Transparency (alpha channel, tRNS key colour, palette alpha) is composited on white.
//   - CMYK / YCCK JPEGs are refused (Pillow would convert them without colour management).
// libjpeg and libpng report errors through longjmp: the decoding functions below keep every
// C++ object outside the setjmp frames and only fill plain structs there.

#include "image.hpp"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "error.hpp"

extern "C" {
#include <jerror.h>
#include <jpeglib.h>
}
#include <png.h>

namespace coatnet {
namespace {

std::string cannot(const std::string& path) { return "cannot read image " + path; }

std::vector<uint8_t> read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) throw UserError(cannot(path), ec.message());
  if (!fs::exists(st)) throw UserError(cannot(path), "no such file", "check the path");
  if (fs::is_directory(st)) throw UserError(cannot(path), "it is a directory, not an image file");
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw UserError(cannot(path), std::strerror(errno));
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw UserError(cannot(path), "read error");
  if (data.empty()) throw UserError(cannot(path), "the file is empty (0 bytes)");
  return data;
}

// w * h overflows long long for the 32-bit sides a PNG header can declare (fuzz_image found it):
// each side is bounded first.
bool too_many_pixels(long long w, long long h) {
  return w > kMaxImagePixels || h > kMaxImagePixels || w * h > kMaxImagePixels;
}

// UserError when the image breaks a size limit (messages as preprocess._check_size).
void check_size(const std::string& path, long long w, long long h) {
  std::string dims = std::to_string(w) + "x" + std::to_string(h);
  if (w <= 0 || h <= 0) throw UserError(cannot(path), "it has no pixels (" + dims + ")");
  if (too_many_pixels(w, h))
    throw UserError(cannot(path), "image too large (" + dims + " = " + std::to_string(static_cast<unsigned long long>(w) * static_cast<unsigned long long>(h)) + " pixels)",
                    "images over " + std::to_string(kMaxImagePixels) + " pixels are refused; downscale it first");
  if (std::max(w, h) > kMaxAspectRatio * std::min(w, h))
    throw UserError(cannot(path), "its aspect ratio is extreme (" + dims + ")",
                    "longer side / shorter side may be at most " + std::to_string(kMaxAspectRatio) + "; crop it first");
}

bool starts_with(const std::vector<uint8_t>& d, const char* magic, size_t n) {
  return d.size() >= n && std::memcmp(d.data(), magic, n) == 0;
}

// ------------------------------------------------------------------------------------ JPEG

enum class Status { ok, error, too_large, unsupported };

struct JpegJob {
  // in
  const uint8_t* data = nullptr;
  size_t size = 0;
  // out
  Status status = Status::ok;
  int width = 0, height = 0, channels = 0, color_space = 0, components = 0;
  bool truncated = false;
  char message[JMSG_LENGTH_MAX] = {0};
  std::vector<uint8_t>* pixels = nullptr;
  std::vector<uint8_t>* exif = nullptr;
  std::string* xmp = nullptr;
};

struct JpegErrorMgr {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  JpegJob* job;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->job->message);
  std::longjmp(err->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  // Warnings (level -1) about damaged data are what Pillow tolerates too; running out of data is
  // not: Pillow refuses a truncated file ("image file is truncated").
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->job->truncated = true;
}

void jpeg_no_output(j_common_ptr) {}

const char kExifHeader[] = "Exif\0\0";
const char kXmpHeader[] = "http://ns.adobe.com/xap/1.0/";  // followed by a NUL

void collect_markers(jpeg_decompress_struct* cinfo, JpegJob* job) {
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    const uint8_t* d = m->data;
    size_t n = m->data_length;
    if (n >= 6 && std::memcmp(d, kExifHeader, 6) == 0) {
      // Pillow keeps the first Exif segment whole and appends later ones without their header.
      if (job->exif->empty())
        job->exif->assign(d, d + n);
      else
        job->exif->insert(job->exif->end(), d + 6, d + n);
    } else if (n >= sizeof kXmpHeader && std::memcmp(d, kXmpHeader, sizeof kXmpHeader) == 0) {
      job->xmp->assign(reinterpret_cast<const char*>(d) + sizeof kXmpHeader, n - sizeof kXmpHeader);
    }
  }
}

void decode_jpeg(JpegJob* job) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  JpegErrorMgr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_message;
  err.mgr.output_message = jpeg_no_output;
  err.job = job;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    job->status = Status::error;
    return;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, job->data, static_cast<unsigned long>(job->size));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  job->width = static_cast<int>(cinfo.image_width);
  job->height = static_cast<int>(cinfo.image_height);
  job->components = cinfo.num_components;
  job->color_space = cinfo.jpeg_color_space;
  long long w = cinfo.image_width, h = cinfo.image_height;
  if (w <= 0 || h <= 0 || too_many_pixels(w, h) || std::max(w, h) > kMaxAspectRatio * std::min(w, h)) {
    job->status = Status::too_large;
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  if (cinfo.num_components == 1 && cinfo.jpeg_color_space == JCS_GRAYSCALE) {
    cinfo.out_color_space = JCS_GRAYSCALE;
    job->channels = 1;
  } else if (cinfo.num_components == 3 && (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB)) {
    cinfo.out_color_space = JCS_RGB;
    job->channels = 3;
  } else {
    job->status = Status::unsupported;
    jpeg_destroy_decompress(&cinfo);
    return;
  }
  collect_markers(&cinfo, job);
  jpeg_start_decompress(&cinfo);
  size_t stride = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  job->pixels->resize(stride * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = job->pixels->data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // Pillow stops once it has the pixels; a missing EOI marker alone is not "truncated" there.
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
}

struct Decoded {
  // A Pillow-like view of the file before conversion to RGB.
  enum Mode { L, LA, RGB, RGBA, P, I16 } mode = L;
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;      // 8-bit samples (I16: big-endian 16-bit pairs)
  std::vector<uint8_t> palette;     // P: 256 x RGB
  std::vector<uint8_t> palette_alpha;  // P: 256 alphas when the file has tRNS
  bool has_key = false;             // L with a tRNS key value
  unsigned key = 0;
  std::vector<uint8_t> exif;
  std::string xmp;
  bool exif_malformed = false;
};

Decoded load_jpeg(const std::string& path, const std::vector<uint8_t>& data) {
  Decoded d;
  JpegJob job;
  job.data = data.data();
  job.size = data.size();
  job.pixels = &d.pixels;
  job.exif = &d.exif;
  job.xmp = &d.xmp;
  decode_jpeg(&job);
  switch (job.status) {
    case Status::error:
      throw UserError(cannot(path), std::string("it is corrupt or truncated (") + job.message + ")");
    case Status::too_large:
      check_size(path, job.width, job.height);
      break;
    case Status::unsupported:
      throw UserError(cannot(path),
                      "it is a " + std::to_string(job.components) + "-component JPEG (colour space " +
                          std::to_string(job.color_space) + "; CMYK/YCCK), which coatnet-classify does not convert",
                      "convert it to an RGB JPEG or PNG first");
    case Status::ok:
      break;
  }
  if (job.truncated) throw UserError(cannot(path), "it is corrupt or truncated (premature end of JPEG data)");
  d.width = job.width;
  d.height = job.height;
  d.mode = job.channels == 1 ? Decoded::L : Decoded::RGB;
  return d;
}

// ------------------------------------------------------------------------------------- PNG

struct PngJob {
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  Status status = Status::ok;
  bool pixels_done = false;
  char message[256] = {0};
  int width = 0, height = 0, bit_depth = 0, color_type = 0;
  size_t rowbytes = 0;
  std::vector<uint8_t>* pixels = nullptr;
  std::vector<png_bytep>* rows = nullptr;
  // palette and transparency as stored in the file
  int num_palette = 0;
  png_color palette[256];
  int num_trans = 0;
  png_byte trans_alpha[256];
  png_color_16 trans_color;
  bool has_trns = false;
  std::vector<uint8_t>* exif = nullptr;
  std::string* xmp = nullptr;
  std::string* raw_exif_text = nullptr;
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* job = static_cast<PngJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof job->message, "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* job = static_cast<PngJob*>(png_get_io_ptr(png));
  if (n > job->size - job->pos) png_error(png, "premature end of PNG data");
  std::memcpy(out, job->data + job->pos, n);
  job->pos += n;
}

void collect_png_text(png_structp png, png_infop info, PngJob* job) {
  png_textp text = nullptr;
  int num = 0;
  if (png_get_text(png, info, &text, &num) > 0) {
    for (int i = 0; i < num; ++i) {
      std::string key = text[i].key ? text[i].key : "";
      const char* value = text[i].text ? text[i].text : "";
      size_t len = text[i].compression >= PNG_ITXT_COMPRESSION_NONE ? text[i].itxt_length : text[i].text_length;
      if (key == "XML:com.adobe.xmp") job->xmp->assign(value, len);
      if (key == "Raw profile type exif") job->raw_exif_text->assign(value, len);
    }
  }
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 n = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &n, &exif) && exif && n > 0) {
    job->exif->assign(kExifHeader, kExifHeader + 6);  // Pillow prefixes eXIf data with it
    job->exif->insert(job->exif->end(), exif, exif + n);
  }
#endif
}

void decode_png(PngJob* job) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
  if (!png) {
    job->status = Status::error;
    std::snprintf(job->message, sizeof job->message, "out of memory");
    return;
  }
  png_infop info = png_create_info_struct(png);
  png_infop end = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    // Chunks after the image data are metadata: Pillow reads them tolerantly too.
    if (!job->pixels_done) job->status = Status::error;
    png_destroy_read_struct(&png, &info, &end);
    return;
  }
  if (!info || !end) png_error(png, "out of memory");
  png_set_read_fn(png, job, png_read_mem);
  // CRCs as Pillow checks them: every chunk before the image data (ancillary ones too), and not
  // the image data's own (Pillow's decoder never reads those).
  png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
  png_read_info(png, info);
  png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
  png_uint_32 w = 0, h = 0;
  int interlace = 0;
  png_get_IHDR(png, info, &w, &h, &job->bit_depth, &job->color_type, &interlace, nullptr, nullptr);
  job->width = static_cast<int>(w);
  job->height = static_cast<int>(h);
  long long lw = w, lh = h;
  if (lw <= 0 || lh <= 0 || too_many_pixels(lw, lh) || std::max(lw, lh) > kMaxAspectRatio * std::min(lw, lh)) {
    job->status = Status::too_large;
    png_destroy_read_struct(&png, &info, &end);
    return;
  }
  // tRNS as stored, read before any transformation touches it.
  png_bytep trans_alpha = nullptr;
  png_color_16p trans_color = nullptr;
  if (png_get_tRNS(png, info, &trans_alpha, &job->num_trans, &trans_color)) {
    job->has_trns = true;
    if (trans_alpha && job->num_trans > 0) std::memcpy(job->trans_alpha, trans_alpha, std::min(job->num_trans, 256));
    if (trans_color) job->trans_color = *trans_color;
  }
  png_colorp pal = nullptr;
  if (png_get_PLTE(png, info, &pal, &job->num_palette) && pal)
    std::memcpy(job->palette, pal, sizeof(png_color) * std::min(job->num_palette, 256));
  if (job->color_type == PNG_COLOR_TYPE_GRAY && job->bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (job->color_type == PNG_COLOR_TYPE_PALETTE && job->bit_depth < 8) png_set_packing(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  job->rowbytes = png_get_rowbytes(png, info);
  job->pixels->resize(job->rowbytes * h);
  job->rows->resize(h);
  for (png_uint_32 y = 0; y < h; ++y) (*job->rows)[y] = job->pixels->data() + job->rowbytes * y;
  png_read_image(png, job->rows->data());
  collect_png_text(png, info, job);
  job->pixels_done = true;
  png_read_end(png, end);
  collect_png_text(png, end, job);
  png_destroy_read_struct(&png, &info, &end);
}

Decoded load_png(const std::string& path, const std::vector<uint8_t>& data) {
  // The size from IHDR first, as Pillow's header check sees it, before libpng reads further.
  if (data.size() >= 24 && std::memcmp(data.data() + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t at) {
      return (static_cast<uint32_t>(data[at]) << 24) | (static_cast<uint32_t>(data[at + 1]) << 16) |
             (static_cast<uint32_t>(data[at + 2]) << 8) | data[at + 3];
    };
    check_size(path, be32(16), be32(20));
  }
  Decoded d;
  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
  std::string raw_exif_text;
  PngJob job;
  job.data = data.data();
  job.size = data.size();
  job.pixels = &raw;
  job.rows = &rows;
  job.exif = &d.exif;
  job.xmp = &d.xmp;
  job.raw_exif_text = &raw_exif_text;
  decode_png(&job);
  if (job.status == Status::error)
    throw UserError(cannot(path), std::string("it is corrupt or truncated (") + job.message + ")");
  if (job.status == Status::too_large) check_size(path, job.width, job.height);
  const int w = job.width, h = job.height;
  const size_t n = static_cast<size_t>(w) * h;
  d.width = w;
  d.height = h;
  const bool wide = job.bit_depth == 16;
  auto sample = [&](size_t y, size_t i) -> uint8_t { return raw[job.rowbytes * y + (wide ? 2 * i : i)]; };  // high byte
  auto fill = [&](int channels) {
    d.pixels.resize(n * channels);
    for (int y = 0; y < h; ++y)
      for (size_t i = 0; i < static_cast<size_t>(w) * channels; ++i) d.pixels[static_cast<size_t>(y) * w * channels + i] = sample(y, i);
  };
  switch (job.color_type) {
    case PNG_COLOR_TYPE_GRAY:
      if (wide) {
        d.mode = Decoded::I16;
        d.pixels = raw;  // rows of w big-endian 16-bit samples, no padding
      } else {
        d.mode = Decoded::L;
        fill(1);
        if (job.has_trns) {
          d.has_key = true;
          d.key = job.trans_color.gray;
        }
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      // 16-bit LA: Pillow reads it as RGBA from the high bytes; the result on white is the same.
      d.mode = Decoded::LA;
      fill(2);
      break;
    case PNG_COLOR_TYPE_RGB:
      // An RGB key colour (tRNS) is ignored: preprocess._to_rgb returns RGB images as they are.
      d.mode = Decoded::RGB;
      fill(3);
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      d.mode = Decoded::RGBA;
      fill(4);
      break;
    case PNG_COLOR_TYPE_PALETTE: {
      d.mode = Decoded::P;
      fill(1);
      // Entries the file does not define are black, as in Pillow's palette.
      d.palette.assign(256 * 3, 0);
      for (int i = 0; i < std::min(job.num_palette, 256); ++i) {
        d.palette[3 * i] = job.palette[i].red;
        d.palette[3 * i + 1] = job.palette[i].green;
        d.palette[3 * i + 2] = job.palette[i].blue;
      }
      if (job.has_trns) {
        d.palette_alpha.assign(256, 255);
        for (int i = 0; i < std::min(job.num_trans, 256); ++i) d.palette_alpha[i] = job.trans_alpha[i];
      }
      break;
    }
    default:
      throw UserError(cannot(path), "unknown PNG colour type " + std::to_string(job.color_type));
  }
  if (d.exif.empty() && !raw_exif_text.empty()) {
    // Pillow: bytes.fromhex over the lines after the third (ImageMagick's "exif / length / hex").
    size_t line = 0, i = 0;
    for (; i < raw_exif_text.size() && line < 3; ++i)
      if (raw_exif_text[i] == '\n') ++line;
    std::vector<uint8_t> bytes;
    int nibble = -1;
    bool bad = false;
    for (; i < raw_exif_text.size(); ++i) {
      char c = raw_exif_text[i];
      if (c == '\n') continue;
      if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
        if (nibble >= 0) bad = true;
        continue;
      }
      int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (v < 0) { bad = true; break; }
      if (nibble < 0) {
        nibble = v;
      } else {
        bytes.push_back(static_cast<uint8_t>(nibble * 16 + v));
        nibble = -1;
      }
    }
    if (nibble >= 0) bad = true;
    // A hex block Pillow cannot parse makes exif_transpose fail: the image stays as stored.
    d.exif_malformed = bad;
    if (!bad) d.exif = bytes;
  }
  return d;
}

// ------------------------------------------------------------------------------ conversion

inline uint8_t on_white(unsigned v, unsigned a) {
  // Pillow's alpha_composite over opaque white, exactly (checked on all 65536 value/alpha pairs).
  return static_cast<uint8_t>((v * a + 255u * (255u - a) + 127u) / 255u);
}

Image to_rgb(const Decoded& d) {
  Image out;
  out.width = d.width;
  out.height = d.height;
  out.channels = 3;
  const size_t n = static_cast<size_t>(d.width) * d.height;
  out.pixels.resize(n * 3);
  uint8_t* o = out.pixels.data();
  const uint8_t* p = d.pixels.data();
  // Pillow compares the key with the 8-bit pixel through its low byte (a 2-bit file's key 3 is
  // compared with 3, not with the expanded 255).
  const unsigned k0 = d.key & 0xff;
  for (size_t i = 0; i < n; ++i, o += 3) {
    unsigned r, g, b, a = 255;
    switch (d.mode) {
      case Decoded::I16: {
        unsigned v = (static_cast<unsigned>(p[2 * i]) << 8) | p[2 * i + 1];
        r = g = b = (v * 255u + 32767u) / 65535u;
        break;
      }
      case Decoded::L:
        r = g = b = p[i];
        if (d.has_key && r == k0) a = 0;
        break;
      case Decoded::LA:
        r = g = b = p[2 * i];
        a = p[2 * i + 1];
        break;
      case Decoded::RGB:
        r = p[3 * i];
        g = p[3 * i + 1];
        b = p[3 * i + 2];
        break;
      case Decoded::RGBA:
        r = p[4 * i];
        g = p[4 * i + 1];
        b = p[4 * i + 2];
        a = p[4 * i + 3];
        break;
      case Decoded::P:
      default: {
        unsigned idx = p[i];
        r = d.palette[3 * idx];
        g = d.palette[3 * idx + 1];
        b = d.palette[3 * idx + 2];
        if (!d.palette_alpha.empty()) a = d.palette_alpha[idx];
        break;
      }
    }
    if (a != 255) {
      r = on_white(r, a);
      g = on_white(g, a);
      b = on_white(b, a);
    }
    o[0] = static_cast<uint8_t>(r);
    o[1] = static_cast<uint8_t>(g);
    o[2] = static_cast<uint8_t>(b);
  }
  return out;
}

// ----------------------------------------------------------------------------------- EXIF

struct Reader {
  const uint8_t* d;
  size_t n;
  bool little;
  bool ok(size_t off, size_t len) const { return off <= n && len <= n - off; }
  unsigned u16(size_t off) const { return little ? d[off] | (d[off + 1] << 8) : (d[off] << 8) | d[off + 1]; }
  uint32_t u32(size_t off) const {
    return little ? static_cast<uint32_t>(d[off]) | (static_cast<uint32_t>(d[off + 1]) << 8) |
                        (static_cast<uint32_t>(d[off + 2]) << 16) | (static_cast<uint32_t>(d[off + 3]) << 24)
                  : (static_cast<uint32_t>(d[off]) << 24) | (static_cast<uint32_t>(d[off + 1]) << 16) |
                        (static_cast<uint32_t>(d[off + 2]) << 8) | static_cast<uint32_t>(d[off + 3]);
  }
};

struct OrientationTag {
  bool malformed = false;  // Pillow raises on it: exif_transpose leaves the image as stored
  bool present = false;    // the tag exists (then XMP is not consulted)
  long long value = 1;     // 2..8 transpose; anything else leaves the image as stored
};

double ieee(uint64_t bits, bool is_double) {
  if (is_double) {
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  uint32_t b32 = static_cast<uint32_t>(bits);
  float v;
  std::memcpy(&v, &b32, sizeof v);
  return v;
}

OrientationTag exif_orientation_tag(const std::vector<uint8_t>& exif) {
  OrientationTag t;
  size_t start = 0;
  for (int i = 0; i < 2; ++i)  // Pillow strips "Exif\0\0" once or twice
    if (exif.size() - start >= 6 && std::memcmp(exif.data() + start, kExifHeader, 6) == 0) start += 6;
  const uint8_t* d = exif.data() + start;
  size_t n = exif.size() - start;
  if (n == 0) return t;
  if (n < 8) {
    t.malformed = true;
    return t;
  }
  Reader r{d, n, false};
  if (std::memcmp(d, "II*\0", 4) == 0) {
    r.little = true;
  } else if (std::memcmp(d, "MM\0*", 4) != 0) {
    t.malformed = true;
    return t;
  }
  size_t ifd = r.u32(4);
  if (!r.ok(ifd, 2)) return t;  // Pillow: the IFD cannot be read, so no tags
  unsigned count = r.u16(ifd);
  for (unsigned i = 0; i < count; ++i) {
    size_t e = ifd + 2 + 12 * static_cast<size_t>(i);
    if (!r.ok(e, 12)) break;  // a truncated IFD keeps the tags read so far
    if (r.u16(e) != 0x0112) continue;
    unsigned type = r.u16(e + 2);
    uint32_t cnt = r.u32(e + 4);
    // unit sizes of the TIFF types Pillow reads (0: a type it skips)
    static const int unit[] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8};
    if (type >= sizeof unit / sizeof unit[0] || unit[type] == 0 || cnt == 0) continue;
    size_t size = static_cast<size_t>(unit[type]) * cnt;
    size_t off = size <= 4 ? e + 8 : r.u32(e + 8);
    if (!r.ok(off, size)) break;  // Pillow stops reading the IFD there
    t.present = true;
    t.malformed = cnt != 1;  // Orientation holds one value; Pillow fails on more
    long long v = 1;
    switch (type) {
      case 1: v = d[off]; break;
      case 6: v = static_cast<int8_t>(d[off]); break;
      case 3: v = r.u16(off); break;
      case 8: v = static_cast<int16_t>(r.u16(off)); break;
      case 4: case 13: v = r.u32(off); break;
      case 9: v = static_cast<int32_t>(r.u32(off)); break;
      case 16: v = (static_cast<long long>(r.u32(r.little ? off + 4 : off)) << 32) | r.u32(r.little ? off : off + 4); break;
      case 5: case 10: {  // a rational equals 2..8 only when it divides exactly
        long long num = type == 5 ? static_cast<long long>(r.u32(off)) : static_cast<int32_t>(r.u32(off));
        long long den = type == 5 ? static_cast<long long>(r.u32(off + 4)) : static_cast<int32_t>(r.u32(off + 4));
        v = (den != 0 && num % den == 0) ? num / den : 1;
        break;
      }
      case 11: case 12: {
        uint64_t bits = type == 11 ? r.u32(off)
                                   : (static_cast<uint64_t>(r.u32(r.little ? off + 4 : off)) << 32) | r.u32(r.little ? off : off + 4);
        double f = ieee(bits, type == 12);
        v = (f >= 2 && f <= 8 && f == static_cast<double>(static_cast<long long>(f))) ? static_cast<long long>(f) : 1;
        break;
      }
      default: v = 1; break;  // ASCII / UNDEFINED: a string or bytes, never equal to 2..8
    }
    t.value = v;
  }
  return t;
}

}  // namespace

int exif_orientation(const std::vector<uint8_t>& exif, const std::string& xmp) {
  OrientationTag t = exif_orientation_tag(exif);
  if (t.malformed) return 1;
  long long value = t.value;
  if (!t.present) {
    // Pillow's getexif falls back to XMP: the first 'tiff:Orientation="D' or 'tiff:Orientation>D'.
    const std::string needle = "tiff:Orientation";
    for (size_t at = xmp.find(needle); at != std::string::npos; at = xmp.find(needle, at + 1)) {
      size_t i = at + needle.size();
      if (i + 1 < xmp.size() && xmp[i] == '=' && xmp[i + 1] == '"')
        i += 2;
      else if (i < xmp.size() && xmp[i] == '>')
        i += 1;
      else
        continue;
      if (i < xmp.size() && xmp[i] >= '0' && xmp[i] <= '9') {
        value = xmp[i] - '0';
        break;
      }
    }
  }
  return (value >= 2 && value <= 8) ? static_cast<int>(value) : 1;
}

Image oriented(const Image& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int W = in.width, H = in.height, C = in.channels;
  const bool swap = orientation >= 5;  // TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.channels = C;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    uint8_t* o = out.row(y);
    for (int x = 0; x < out.width; ++x) {
      int sx, sy;
      switch (orientation) {
        case 2: sx = W - 1 - x; sy = y; break;          // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;  // ROTATE_180
        case 4: sx = x; sy = H - 1 - y; break;          // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break;          // ROTATE_270 (clockwise)
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;  // TRANSVERSE
        default: sx = W - 1 - y; sy = x; break;         // 8: ROTATE_90 (counter-clockwise)
      }
      std::memcpy(o + static_cast<size_t>(x) * C, in.row(sy) + static_cast<size_t>(sx) * C, C);
    }
  }
  return out;
}

Image load_image_rgb(const std::string& path) { return decode_image_rgb(read_file(path), path); }

Image decode_image_rgb(const std::vector<uint8_t>& data, const std::string& path) {
  if (data.empty()) throw UserError(cannot(path), "the file is empty (0 bytes)");
  Decoded d;
  if (starts_with(data, "\xFF\xD8\xFF", 3)) {
    d = load_jpeg(path, data);
  } else if (starts_with(data, "\x89PNG\r\n\x1a\n", 8)) {
    d = load_png(path, data);
  } else {
    const char* other = starts_with(data, "BM", 2)                                   ? "BMP"
                        : starts_with(data, "GIF8", 4)                               ? "GIF"
                        : (starts_with(data, "RIFF", 4) && data.size() >= 12 &&
                           std::memcmp(data.data() + 8, "WEBP", 4) == 0)             ? "WebP"
                        : (starts_with(data, "II*\0", 4) || starts_with(data, "MM\0*", 4)) ? "TIFF"
                        : (data.size() >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '6') ? "PPM/PGM"
                                                                                      : nullptr;
    if (other)
      throw UserError(cannot(path), std::string("it is a ") + other + " file; coatnet-classify reads JPEG and PNG",
                      "convert it to PNG, or use coatnet-deploy predict");
    throw UserError(cannot(path), "not a recognised image file", "supported formats: jpeg, png");
  }
  check_size(path, d.width, d.height);
  Image rgb = to_rgb(d);
  return oriented(rgb, d.exif_malformed ? 1 : exif_orientation(d.exif, d.xmp));
}

}  // namespace coatnet

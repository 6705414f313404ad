#include "npy.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "error.hpp"

namespace coatnet {
namespace {

std::string header_value(const std::string& h, const std::string& key) {
  // the value after 'key': up to the next ',' at depth 0 or the closing '}'
  size_t at = h.find("'" + key + "'");
  if (at == std::string::npos) return "";
  at = h.find(':', at);
  if (at == std::string::npos) return "";
  size_t i = at + 1, depth = 0;
  std::string out;
  for (; i < h.size(); ++i) {
    char c = h[i];
    if (c == '(') ++depth;
    if (c == ')') {
      if (depth == 0) break;
      --depth;
    }
    if ((c == ',' || c == '}') && depth == 0) break;
    out += c;
  }
  size_t b = out.find_first_not_of(" "), e = out.find_last_not_of(" ");
  return b == std::string::npos ? "" : out.substr(b, e - b + 1);
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const char* descr, const void* data,
               size_t item) {
  std::string dims;
  size_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
    n *= static_cast<size_t>(shape[i]);
  }
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, '\n' last
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".partial";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (!f) throw UserError("cannot write " + path, std::strerror(errno), "check that its folder exists and is writable");
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  const char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n * item));
  f.close();
  if (!f) {
    std::remove(tmp.c_str());
    throw UserError("cannot write " + path, "write error (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw UserError("cannot write " + path, ec.message());
  }
}

}  // namespace

NpyArray read_npy_f32(const std::string& path, const std::string& shown) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot read " + shown, std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw UserError("cannot read " + shown, "read error");
  return parse_npy_f32(bytes.data(), bytes.size(), shown);
}

NpyArray parse_npy_f32(const uint8_t* data, size_t size, const std::string& shown) {
  auto bad = [&](const std::string& why) { return UserError(shown + " is not a readable float32 .npy file", why, "export the bundle again"); };
  size_t pos = 0;
  auto take = [&](size_t n) -> const uint8_t* {
    if (size - pos < n) return nullptr;
    const uint8_t* at = data + pos;
    pos += n;
    return at;
  };
  const uint8_t* magic = take(8);
  if (!magic || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw bad("no .npy magic");
  const int major = magic[6];
  uint32_t hlen = 0;
  if (major == 1) {
    const uint8_t* b = take(2);
    if (!b) throw bad("truncated header");
    hlen = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    const uint8_t* b = take(4);
    if (!b) throw bad("truncated header");
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw bad("unknown format version " + std::to_string(major));
  }
  if (hlen > (1u << 20)) throw bad("header too long");
  const uint8_t* hb = take(hlen);
  if (!hb) throw bad("truncated header");
  const std::string h(reinterpret_cast<const char*>(hb), hlen);
  std::string descr = header_value(h, "descr"), order = header_value(h, "fortran_order"), shape = header_value(h, "shape");
  if (descr != "'<f4'") throw bad("dtype is " + (descr.empty() ? std::string("missing") : descr) + ", expected '<f4' (float32)");
  if (order != "False") throw bad("it is not in C order");
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') throw bad("no shape");
  NpyArray a;
  size_t count = 1;
  std::string inner = shape.substr(1, shape.size() - 2);
  size_t i = 0;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i >= inner.size()) break;
    size_t j = i;
    while (j < inner.size() && inner[j] >= '0' && inner[j] <= '9') ++j;
    if (j == i || j - i > 12) throw bad("bad shape " + shape);
    int64_t d = std::stoll(inner.substr(i, j - i));
    if (d > 0 && count > (size_t{1} << 34) / static_cast<size_t>(d)) throw bad("too large");
    a.shape.push_back(d);
    count *= static_cast<size_t>(d);
    i = j;
  }
  // the data must be exactly what the header promises
  const size_t left = size - pos;
  if (left != count * 4)
    throw bad("it holds " + std::to_string(left) + " data bytes, its header says " + std::to_string(count * 4));
  a.data.resize(count);
  if (count) std::memcpy(a.data.data(), data + pos, count * 4);
  return a;
}

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  write_npy(path, shape, "<f4", data, 4);
}

void write_npy_u8(const std::string& path, const std::vector<int64_t>& shape, const uint8_t* data) {
  write_npy(path, shape, "|u1", data, 1);
}

}  // namespace coatnet

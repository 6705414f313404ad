// NumPy .npy files (format 1.0-3.0, little-endian float32, C order): the bundle's golden data and
// --dump-tensor output, without a zip or NumPy library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace coatnet {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Reads a float32 array; UserError naming `shown` (the path as the user knows it) otherwise.
NpyArray read_npy_f32(const std::string& path, const std::string& shown);

// The same from the file's bytes (what the fuzz target calls).
NpyArray parse_npy_f32(const uint8_t* data, size_t size, const std::string& shown);

// Writes a float32 / uint8 array atomically (a temporary file renamed into place).
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);
void write_npy_u8(const std::string& path, const std::vector<int64_t>& shape, const uint8_t* data);

}  // namespace coatnet

// .npy bytes -> the float32 array the app compares against (a bundle's golden files).
#include <cstdint>

#include "fuzz_common.hpp"
#include "npy.hpp"

using namespace coatnet;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  coatnet_fuzz::accepts_or_refuses([&] {
    NpyArray a = parse_npy_f32(data, size, "fuzz.npy");
    size_t count = 1;
    for (int64_t d : a.shape) {
      if (d < 0) coatnet_fuzz::finding("negative dimension accepted");
      count *= static_cast<size_t>(d);
    }
    if (count != a.data.size()) coatnet_fuzz::finding("shape and data disagree");
  });
  return 0;
}

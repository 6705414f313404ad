// manifest.json + manifest.sha256 bytes -> open_bundle: the sha256sum line, the JSON, the schema,
// every artifact check (paths that leave the bundle, sizes, SHA-256) and the fields the app reads
// (labels, batch range, preprocess). The bundle folder is real: a few fixed artifact files (and a
// symlink out of the bundle) beside the fuzzed manifest, so path checks run against a file system.
//
// Input: byte 0 chooses manifest.sha256: absent, the right digest of the manifest (the common case,
// so the fuzzer gets past the checksum to the JSON), or fuzzed text (the bytes up to the first
// newline). The rest is manifest.json.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <openssl/evp.h>

#include "bundle.hpp"
#include "fuzz_common.hpp"

namespace fs = std::filesystem;
using namespace coatnet;

namespace {

fs::path g_dir;

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string sha256_hex(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += {digits[md[i] >> 4], digits[md[i] & 15]};
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Every input rewrites manifest.json: on a disk file system each write waits for the last one's
  // writeback, which held this target to a fifth of a core. A tmpfs keeps it CPU-bound.
  std::error_code shm_ec;
  const bool shm = fs::is_directory("/dev/shm", shm_ec) && access("/dev/shm", W_OK) == 0;
  std::string tmpl = std::string(shm ? "/dev/shm" : "/tmp") + "/coatnet-fuzz-manifest-XXXXXX";
  if (!mkdtemp(tmpl.data())) coatnet_fuzz::finding("mkdtemp failed");
  g_dir = tmpl;
  // The artifacts the seed manifests list (examples/cpp/fuzz/make_corpus.py writes their sizes and digests).
  write(g_dir / "model.xml", "<net name=\"fuzz\"/>\n");
  write(g_dir / "model.bin", std::string(16, '\0'));
  fs::create_directories(g_dir / "golden");
  write(g_dir / "golden" / "inputs.npy", "not really npy");
  fs::create_symlink("/etc/hostname", g_dir / "outside");
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 4;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::error_code ec;
  fs::remove(g_dir / "manifest.sha256", ec);
  if (mode == 1 || mode == 2) {
    write(g_dir / "manifest.sha256", sha256_hex(rest) + "  manifest.json\n");
  } else if (mode == 3) {
    size_t nl = rest.find('\n');
    std::string sha = nl == std::string::npos ? rest : rest.substr(0, nl + 1);
    rest = nl == std::string::npos ? "" : rest.substr(nl + 1);
    write(g_dir / "manifest.sha256", sha);
  }
  write(g_dir / "manifest.json", rest);
  coatnet_fuzz::accepts_or_refuses([&] {
    Bundle b = open_bundle(g_dir.string());
    if (b.num_classes < 1 || b.labels.size() != static_cast<size_t>(b.num_classes))
      coatnet_fuzz::finding("a bundle opened with labels that do not match num_classes");
    if (b.batch_min < 1 || b.batch_min > b.batch_max) coatnet_fuzz::finding("a bundle opened with an empty batch range");
    if (b.preprocess.crop < 1 || b.preprocess.resize < b.preprocess.crop) coatnet_fuzz::finding("a bundle opened with a bad crop");
    for (const std::string& rel : b.listed) (void)b.file(rel);
    (void)b.file("model.xml");
  });
  return 0;
}

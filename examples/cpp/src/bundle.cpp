#include "bundle.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <openssl/evp.h>

#include "error.hpp"

namespace fs = std::filesystem;

namespace coatnet {
namespace {

const char* const kManifest = "manifest.json";
const char* const kManifestSha = "manifest.sha256";
const std::set<std::string> kUnchecked = {"report.json", "report.md", "report.html"};

std::string read_text(const fs::path& p, const std::string& what) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw UserError("cannot read " + what, std::strerror(errno));
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string hex(const unsigned char* d, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[d[i] >> 4];
    out += digits[d[i] & 15];
  }
  return out;
}

std::string sha256_bytes(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return hex(md, len);
}

bool is_int(const nlohmann::json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

std::string show(const nlohmann::json& v) { return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// manifest.sha256 in sha256sum format: "<64 hex>  manifest.json" (or " *manifest.json").
void check_manifest_sha(const Bundle& b, const std::string& manifest_text) {
  const fs::path p = b.root / kManifestSha;
  std::string text = read_text(p, b.where() + kManifestSha);
  std::string digest = text.substr(0, std::min<size_t>(64, text.size()));
  bool ok = text.size() > 66 && digest.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
  std::string rest = ok ? text.substr(64) : "";
  size_t i = 0;
  while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t')) ++i;
  if (i < rest.size() && rest[i] == '*') ++i;
  std::string name = rest.substr(i);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (!ok || i == 0 || name != kManifest)
    throw UserError(b.where() + kManifestSha + " is malformed", "expected one line '<sha256>  manifest.json' (sha256sum format)",
                    "export the bundle again");
  for (char& c : digest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (sha256_bytes(manifest_text) != digest)
    throw UserError(b.where() + kManifest + " does not match " + kManifestSha, "the manifest was edited after export",
                    "copy the bundle again or export it again");
}

void verify_artifacts(Bundle& b) {
  const nlohmann::json& arts = b.manifest.at("artifacts");
  if (!arts.is_array()) throw UserError(b.where() + "manifest.artifacts is not a list", "the manifest was edited", "export the bundle again");
  std::error_code ec;
  const fs::path root = fs::canonical(b.root, ec);
  for (const nlohmann::json& e : arts) {
    if (!e.is_object() || !e.contains("path") || !e.at("path").is_string())
      throw UserError(b.where() + "manifest.artifacts has an entry without a path: " + show(e), "the manifest was edited",
                      "export the bundle again");
    const std::string rel = e.at("path").get<std::string>();
    b.listed.insert(rel);
    if (kUnchecked.count(rel)) continue;
    fs::path p = fs::weakly_canonical(b.root / rel, ec);
    auto rp = p.lexically_relative(root);
    if (ec || rel.empty() || fs::path(rel).is_absolute() || rp.empty() || *rp.begin() == "..")
      throw UserError(b.where() + "artifact path '" + rel + "' points outside the bundle", "the manifest was tampered with",
                      "export the bundle again");
    if (!fs::is_regular_file(p, ec))
      throw UserError(b.where() + "'" + rel + "' is missing", "the manifest lists it", "copy the whole bundle directory, or export again");
    const auto size = fs::file_size(p, ec);
    const nlohmann::json bytes = e.value("bytes", nlohmann::json());
    if (ec || !is_int(bytes) || bytes.get<long long>() < 0 || static_cast<uintmax_t>(bytes.get<long long>()) != size)
      throw UserError(b.where() + "'" + rel + "' has " + std::to_string(size) + " bytes, the manifest says " + show(bytes),
                      "the file was truncated or changed after export", "copy the bundle again or export again");
    const nlohmann::json sha = e.value("sha256", nlohmann::json());
    if (!sha.is_string() || sha256_file(p) != sha.get<std::string>())
      throw UserError(b.where() + "'" + rel + "' does not match its SHA-256 in the manifest", "the file was changed after export",
                      "copy the bundle again or export again");
  }
}

int positive_int(const nlohmann::json& parent, const char* key, const std::string& name, const Bundle& b) {
  if (!parent.is_object() || !parent.contains(key) || !is_int(parent.at(key)) || parent.at(key).get<long long>() < 1 ||
      parent.at(key).get<long long>() > 1000000000)
    throw UserError(b.where() + "manifest " + name + " is " + (parent.is_object() && parent.contains(key) ? show(parent.at(key)) : "missing"),
                    "it must be a positive integer", "export the bundle again");
  return parent.at(key).get<int>();
}

void read_fields(Bundle& b) {
  const nlohmann::json& m = b.manifest;
  for (const char* key : {"target", "precision"})
    if (!m.at(key).is_string())
      throw UserError(b.where() + "manifest " + key + " is " + show(m.at(key)), "it must be a string", "export the bundle again");
  b.target = m.at("target").get<std::string>();
  b.precision = m.at("precision").get<std::string>();
  b.status = m.contains("status") && m.at("status").is_string() ? m.at("status").get<std::string>() : "";
  const nlohmann::json& model = m.at("model");
  b.num_classes = positive_int(model, "num_classes", "model.num_classes", b);
  const nlohmann::json labels = model.value("labels", nlohmann::json());
  if (!labels.is_null()) {
    if (!labels.is_array() || labels.size() != static_cast<size_t>(b.num_classes))
      throw UserError(b.where() + "manifest.json has " + (labels.is_array() ? std::to_string(labels.size()) : "invalid") + " labels",
                      "the model has " + std::to_string(b.num_classes) + " classes", "export the bundle again");
    for (const nlohmann::json& l : labels) b.labels.push_back(l.is_string() ? l.get<std::string>() : show(l));
  } else {
    for (int i = 0; i < b.num_classes; ++i) b.labels.push_back("class_" + std::to_string(i));
  }
  const nlohmann::json& input = m.at("input");
  const nlohmann::json batch = input.is_object() ? input.value("batch", nlohmann::json::object()) : nlohmann::json::object();
  b.batch_min = batch.contains("min") ? positive_int(batch, "min", "input.batch.min", b) : 1;
  b.batch_max = batch.contains("max") ? positive_int(batch, "max", "input.batch.max", b) : 1;
  if (b.batch_min > b.batch_max)
    throw UserError(b.where() + "manifest input.batch.min (" + std::to_string(b.batch_min) + ") exceeds input.batch.max (" +
                        std::to_string(b.batch_max) + ")",
                    "the batch range is empty", "export the bundle again");
  b.preprocess = PreprocessConfig::from_json(m.at("preprocess"), b.where());
  // The input the engine takes must be the crop the preprocessing produces.
  const nlohmann::json shape = input.is_object() ? input.value("shape", nlohmann::json()) : nlohmann::json();
  if (shape.is_array() && shape.size() == 4 && is_int(shape[2]) && is_int(shape[3]) &&
      (shape[2].get<long long>() != b.preprocess.crop || shape[3].get<long long>() != b.preprocess.crop))
    throw UserError(b.where() + "manifest input.shape " + show(shape) + " does not match preprocess.crop " + std::to_string(b.preprocess.crop),
                    "the manifest is inconsistent", "export the bundle again");
}

}  // namespace

std::string sha256_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot read " + path.string(), std::strerror(errno));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(f.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return hex(md, len);
}

fs::path Bundle::file(const std::string& rel) const {
  if (!listed.count(rel))
    throw UserError(where() + "'" + rel + "' is not listed in manifest.artifacts", "only files with a checksum are loaded",
                    "export the bundle again");
  return root / rel;
}

Bundle open_bundle(const std::string& dir) {
  Bundle b;
  b.shown = dir;
  b.root = fs::path(dir);
  std::error_code ec;
  if (!fs::is_directory(b.root, ec))
    throw UserError("bundle '" + dir + "' not found", "the path is not a directory", "pass the directory that `export --output` wrote");
  const fs::path mpath = b.root / kManifest;
  if (!fs::is_regular_file(mpath, ec))
    throw UserError("'" + dir + "' is not a bundle", std::string(kManifest) + " is missing",
                    "pass the directory that `export --output` wrote, or export again");
  const std::string text = read_text(mpath, b.where() + kManifest);
  // A bundle that carries manifest.sha256 is checked whatever its manifest claims.
  const bool has_sha = fs::exists(b.root / kManifestSha, ec);
  if (has_sha) check_manifest_sha(b, text);
  try {
    b.manifest = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(b.where() + kManifest + " is not valid JSON", e.what(), "export the bundle again");
  }
  if (!b.manifest.is_object() || !b.manifest.contains("schema_version"))
    throw UserError(b.where() + kManifest + " has no schema_version", "it was not written by coatnet-deploy", "export the bundle again");
  const nlohmann::json& sv = b.manifest.at("schema_version");
  if (!is_int(sv) || sv.get<long long>() > kMaxSchemaVersion)
    throw UserError("bundle '" + dir + "' has schema version " + show(sv),
                    "this coatnet-classify reads up to version " + std::to_string(kMaxSchemaVersion), "build a newer coatnet-classify");
  b.schema_version = sv.get<int>();
  if (b.schema_version >= 2 && !has_sha)
    throw UserError(b.where() + kManifestSha + " is missing", "schema version " + std::to_string(b.schema_version) + " bundles carry it",
                    "copy the whole bundle directory, or export again");
  for (const char* key : {"model", "input", "preprocess", "target", "precision", "artifacts"})
    if (!b.manifest.contains(key))
      throw UserError(b.where() + kManifest + " lacks '" + key + "'", "the manifest is incomplete or was edited", "export the bundle again");
  verify_artifacts(b);
  read_fields(b);
  return b;
}

}  // namespace coatnet

// A coatnet-deploy bundle on disk, read only after its manifest and every artifact are verified
// (as coatnet_deploy.bundle.verify_bundle does, plus manifest.sha256 for schema_version >= 2).
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "preprocess.hpp"

namespace coatnet {

// The newest bundle layout this app reads.
constexpr int kMaxSchemaVersion = 2;

struct Bundle {
  std::string shown;  // the path as the user gave it, for messages
  std::filesystem::path root;
  nlohmann::json manifest;
  int schema_version = 1;
  std::string target, precision, status;
  int num_classes = 0;
  std::vector<std::string> labels;
  int batch_min = 1, batch_max = 1;
  PreprocessConfig preprocess;
  std::set<std::string> listed;  // manifest.artifacts paths

  // "bundle 'X': " for messages.
  std::string where() const { return "bundle '" + shown + "': "; }
  // A file the app is about to load: it must be listed in manifest.artifacts (and so verified).
  std::filesystem::path file(const std::string& rel) const;
};

// Bundle directory -> verified Bundle. UserError naming the file that is missing, changed, or
// malformed. Reports (report.json/.md/.html) are skipped: `parity` and `bench` rewrite them.
Bundle open_bundle(const std::string& dir);

// Lowercase hex SHA-256 of a file (streamed).
std::string sha256_file(const std::filesystem::path& path);

}  // namespace coatnet

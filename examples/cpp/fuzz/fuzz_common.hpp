// What every fuzz target asserts about the code it drives: an input ends in a result or in one
// coatnet::UserError (one non-empty line, as the app prints it); anything else is a finding.
// Sanitizer reports (ASan, UBSan) and these aborts are what libFuzzer saves as crash-* inputs.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "error.hpp"

namespace coatnet_fuzz {

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs `body`; a UserError is an accepted outcome, provided its message is one line.
template <class F>
void accepts_or_refuses(F&& body) {
  try {
    body();
  } catch (const coatnet::UserError& e) {
    const std::string m = e.what();
    if (m.empty() || m.find('\n') != std::string::npos || m.find('\r') != std::string::npos)
      finding("a UserError that is not one line: [" + m + "]");
  } catch (const std::exception& e) {
    // The app would exit 70 ("a bug in this program") on this: not a clear line for the user.
    finding(std::string("an exception that is not a UserError: ") + e.what());
  }
}

// FNV-1a over the input: a deterministic choice of settings that leaves every byte to the parser
// (a file's first and last bytes matter: magic numbers, JPEG's EOI).
inline uint64_t fnv1a(const uint8_t* d, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ d[i]) * 1099511628211ULL;
  return h;
}

}  // namespace coatnet_fuzz

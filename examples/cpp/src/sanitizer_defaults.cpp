// Built into the sanitizer build only (COATNET_SANITIZE): default options, so that running
// build/cpp-asan/coatnet-classify by hand behaves as the tests expect. Environment variables
// (ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS, TBB_ENABLE_SANITIZERS) still override them.

#include <cstdlib>

extern "C" {

// exitcode=86: a sanitizer report must never look like one of the app's own exit codes (1, 2).
const char* __asan_default_options() { return "exitcode=86:detect_leaks=1:abort_on_error=0:halt_on_error=1"; }

const char* __ubsan_default_options() { return "exitcode=86:halt_on_error=1:print_stacktrace=1"; }

// No leak suppressions: LeakSanitizer reports nothing in OpenVINO or TBB on this app's paths
// (frontends are loaded by name, see engine.cpp; probing all of them leaked in TensorFlow's).
const char* __lsan_default_options() { return "exitcode=86"; }

}

namespace {

// TBB (inside the OpenVINO wheel) dlopens libtbbbind with RTLD_DEEPBIND, which the sanitizer
// runtime refuses ("incompatible with sanitizer runtime") and exits on. oneTBB's own switch
// TBB_ENABLE_SANITIZERS=1 drops that flag; TBB reads it when it first builds its thread pool,
// long after this runs.
struct EnableTbbUnderSanitizers {
  EnableTbbUnderSanitizers() { setenv("TBB_ENABLE_SANITIZERS", "1", 0); }
} enable_tbb_under_sanitizers;

}  // namespace

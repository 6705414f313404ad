# Cross-build examples/cpp for 64-bit ARM Linux (Raspberry Pi 4 / 5, Jetson Orin, Graviton...) with
# Debian's cross compiler (`g++-aarch64-linux-gnu`) against the folder that
# tools/devices/aarch64-sysroot.sh lays out (`make cpp-app-aarch64` does all of it):
#
#   <root>/sysroot   Debian arm64 packages unpacked with dpkg -x (glibc, libstdc++, libjpeg, libpng,
#                    OpenSSL, zlib and their -dev packages)
#   <root>/site      aarch64 wheels installed with pip --target; site/openvino carries OpenVINO's C++ SDK
#                    (include/, cmake/OpenVINOConfig.cmake, libs/)
#
#   cmake -S examples/cpp -B build/cpp-aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=examples/cpp/cmake/aarch64-linux-gnu.cmake [-DCOATNET_AARCH64_ROOT=build/aarch64]
#
# <root> defaults to build/aarch64 in this checkout. OpenVINO comes from <root>/site/openvino/cmake
# (OpenVINO_DIR; pass -DOpenVINO_DIR=... for another aarch64 OpenVINO), so no aarch64 python is run.
# The compiler's own C/C++ runtime (/usr/aarch64-linux-gnu, from the cross packages) comes first, the
# sysroot's headers and libraries after it: both are Debian 12's glibc 2.36 and libstdc++ 12.
# Code is generic ARMv8-A (no -mcpu), so one binary runs on Cortex-A53/A72/A76/A78 alike.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT COATNET_AARCH64_ROOT)
  if(DEFINED ENV{COATNET_AARCH64_ROOT})
    set(COATNET_AARCH64_ROOT "$ENV{COATNET_AARCH64_ROOT}")
  else()
    get_filename_component(COATNET_AARCH64_ROOT "${CMAKE_CURRENT_LIST_DIR}/../../../build/aarch64" ABSOLUTE)
  endif()
endif()
get_filename_component(COATNET_AARCH64_ROOT "${COATNET_AARCH64_ROOT}" ABSOLUTE)
# try_compile projects read this file again: hand them the same root.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES COATNET_AARCH64_ROOT)
if(NOT EXISTS "${COATNET_AARCH64_ROOT}/sysroot/usr/include/stdio.h")
  message(FATAL_ERROR "no aarch64 sysroot at ${COATNET_AARCH64_ROOT}/sysroot: run tools/devices/aarch64-sysroot.sh "
                      "(or `make cpp-app-aarch64`), or pass -DCOATNET_AARCH64_ROOT=<dir>")
endif()

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_SYSROOT "${COATNET_AARCH64_ROOT}/sysroot")

# nlohmann-json is header-only and architecture-independent (Debian: Architecture all). Taken from the
# sysroot when it is there; otherwise the host's copy (the native build's apt line installs it) is
# staged into the build folder, so that only its own include folder is added: the host's /usr/include
# itself must never reach the cross compiler.
set(_coatnet_find_roots "${CMAKE_SYSROOT}" "${COATNET_AARCH64_ROOT}/site")
if(NOT EXISTS "${CMAKE_SYSROOT}/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake"
   AND EXISTS "/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" AND EXISTS "/usr/include/nlohmann/json.hpp"
   AND NOT CMAKE_IN_TRY_COMPILE)
  set(_noarch "${CMAKE_BINARY_DIR}/noarch")
  if(NOT EXISTS "${_noarch}/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake")
    file(COPY "/usr/include/nlohmann" DESTINATION "${_noarch}/usr/include")
    file(COPY "/usr/share/cmake/nlohmann_json" DESTINATION "${_noarch}/usr/share/cmake")
  endif()
  list(APPEND _coatnet_find_roots "${_noarch}")
endif()
set(CMAKE_FIND_ROOT_PATH ${_coatnet_find_roots})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # build tools are the host's
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)   # libraries, headers and packages only from the roots above
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

if(NOT OpenVINO_DIR)
  set(OpenVINO_DIR "${COATNET_AARCH64_ROOT}/site/openvino/cmake" CACHE PATH "OpenVINOConfig.cmake folder (aarch64 openvino wheel)")
endif()

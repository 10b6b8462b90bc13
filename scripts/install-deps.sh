#!/usr/bin/env bash
# Installs what kiln builds with, from Debian's packages by name (nothing else is fetched):
# a C++20 compiler, CMake, Ninja, GoogleTest. CUDA 13 (nvcc, cudart) is expected on the machine;
# without nvcc the build gives the reference backend alone.
set -euo pipefail
need=()
command -v g++ > /dev/null || need+=(g++)
command -v cmake > /dev/null || need+=(cmake)
command -v ninja > /dev/null || need+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "install-deps: nvcc is at /usr/local/cuda/bin (add it to PATH)"
fi

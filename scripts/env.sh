# Sourced by the scripts: picks the build preset (CUDA when nvcc is present) and the device.
export PATH="$PATH:/usr/local/cuda/bin"
if command -v nvcc > /dev/null; then
  KILN_PRESET=default
  KILN_BUILD_DIR=build
else
  KILN_PRESET=cpu
  KILN_BUILD_DIR=build-cpu
fi
KILN_HAS_GPU=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then KILN_HAS_GPU=1; fi

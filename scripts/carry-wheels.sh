#!/usr/bin/env bash
# Download the pure-Python wheels that the benchmark peers need on the lent GPU machine (which has no
# network) into .whl/ (git-ignored), so they can travel there with `carry: [".whl"]`.
#
# Liger-Kernel: its wheel is pure Python (py3-none-any); it declares only torch and triton
# (Requires-Dist: torch>=2.1.2, triton>=2.3.1), both already on the GPU image (torch 2.11.0+cu130,
# triton 3.6.0), and imports `packaging`, which the image has (transformers needs it).  So only the
# liger wheel is downloaded, with --no-deps: torch/triton must never land in .whl/, or the install
# below would shadow the machine's CUDA torch.
#
# On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
#
# Usage: scripts/carry-wheels.sh [LIGER_VERSION]     (default below; env LIGER_VERSION also works)
set -euo pipefail

LIGER_VERSION="${1:-${LIGER_VERSION:-0.8.5}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
mkdir -p "$DEST"

PY="${PYTHON:-python3}"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any)

# Extra pure-Python wheels to carry (pkg==ver), if a future liger needs something the image lacks.
EXTRA=()

# Drop other liger versions so that `.whl/*.whl` installs exactly one.
find "$DEST" -maxdepth 1 -name 'liger_kernel-*.whl' ! -name "liger_kernel-${LIGER_VERSION}-*.whl" -print -delete

"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d "$DEST" "liger-kernel==${LIGER_VERSION}"
for spec in "${EXTRA[@]}"; do
  "$PY" -m pip download -q --no-deps "${PLAT[@]}" -d "$DEST" "$spec"
done

# Guard: nothing that would shadow the GPU machine's torch/triton/nvidia stack.
if ls "$DEST" | grep -Ei '^(torch|triton|nvidia|pytorch)[-_]' >/dev/null; then
  echo "carry-wheels: refusing: torch/triton/nvidia wheels found in $DEST:" >&2
  ls "$DEST" | grep -Ei '^(torch|triton|nvidia|pytorch)[-_]' >&2
  exit 1
fi

# Show what is there, and check the liger wheel is pure Python and its declared deps.
ls -l "$DEST"/*.whl
"$PY" - "$DEST" "$LIGER_VERSION" <<'EOF'
import sys, zipfile, glob, os
dest, ver = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(dest, f"liger_kernel-{ver}-*.whl"))
assert len(whl) == 1, whl
name = os.path.basename(whl[0])
assert name.endswith("-py3-none-any.whl"), f"not a pure-Python wheel: {name}"
with zipfile.ZipFile(whl[0]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = [l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines()
            if l.startswith("Requires-Dist:") and "extra ==" not in l]
print(f"carry-wheels: {name} ({os.path.getsize(whl[0]) / 1e6:.2f} MB); required deps: {reqs}")
EOF
du -sh "$DEST"

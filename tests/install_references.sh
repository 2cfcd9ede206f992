#!/usr/bin/env bash
# Installs the reference implementations that the parity tests run beside ours:
#   sam2==1.1.0 (Meta's SAM 2 code, byte-identical to facebookresearch/sam2 @2b90b9f)
#   segment-anything==1.0 (installed by the dev extra)
# The sam2 sdist must be built without build isolation (else pip pulls another torch into the
# isolated build env) and without its CUDA extension; its runtime deps (torchvision, hydra-core,
# iopath) come from the dev extra.
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("sam2") == "1.1.0" else 1)
PYEOF
then
  echo "sam2 1.1.0 already installed"
  exit 0
fi
SAM2_BUILD_CUDA=0 "$PY" -m pip install --no-deps --no-build-isolation "sam2==1.1.0"

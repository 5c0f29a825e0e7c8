#!/usr/bin/env bash
# Create bench/.venv-peers: a SEPARATE venv holding the peer libraries (DeepCTR-Torch, FuxiCTR)
# that bench/train.py measures against. torch==2.13.0 is installed first (the CPU wheel the
# main venv uses), so the peers' `torch>=...` requirements are already met and nothing pulls a
# CUDA build. Idempotent: re-running only installs what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-peers"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0" numpy pandas scikit-learn pyarrow pyyaml tqdm requests
# The peers themselves with --no-deps, then their runtime needs explicitly, so that no resolver
# decision upstream can ever swap the torch wheel for a CUDA build.
"${pip[@]}" --no-deps "deepctr-torch==0.3.0" "fuxictr==2.3.10"
# their declared runtime requirements (pip show): fuxictr imports ray at import time
"${pip[@]}" h5py polars pydantic "ray[data]==2.60.0"
"$venv/bin/python" - <<'PY'
import torch, deepctr_torch, fuxictr
print("peers venv ok: torch", torch.__version__, "deepctr_torch", deepctr_torch.__version__,
      "fuxictr", getattr(fuxictr, "__version__", "?"))
PY

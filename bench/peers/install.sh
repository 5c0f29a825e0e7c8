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
"${pip[@]}" "torch==2.13.0" numpy pandas scikit-learn pyarrow pyyaml tqdm
# The peers themselves. Their own pins are loose enough for torch 2.13; we still pass --no-deps
# for the packages themselves and install their runtime needs explicitly so a resolver change
# upstream can never swap torch.
"${pip[@]}" --no-deps "deepctr-torch==0.3.0" "fuxictr==2.3.10"
"${pip[@]}" h5py polars keras-preprocessing tensorboard 2>/dev/null || true
"$venv/bin/python" - <<'PY'
import torch, deepctr_torch, fuxictr
print("peers venv ok: torch", torch.__version__, "deepctr_torch", deepctr_torch.__version__,
      "fuxictr", getattr(fuxictr, "__version__", "?"))
PY

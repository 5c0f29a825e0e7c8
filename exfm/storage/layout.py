"""The bucket's layout and the column names DAS adds: one home for every prefix and name.

Pure constants and string functions (no boto3), so the pure parts (``exfm.data``) may import it::

    raw/day=D/                 landed days (features + labels), committed by a manifest
    raw/features/day=D/        split mode: features first ...
    raw/labels/day=L/          ... labels later (keyed by the request id)
    das/pending/day=D/         split mode: inferred features waiting for their labels
    augmented/day=D/           raw rows + fm_pred_<task> + fm_version (what VMs read)
    <prefix>/day=D/_stats.json, _gx_docs/   a data gate's day statistics and Data Docs
    raw/_schema.yaml           the dataset's schema.yaml
    state/vm/<name>/day=D/trainer_state.pt   a VM's optimizer / Student Adapter state
    ray/fm/<run name>/         Ray Train checkpoints of the FM's day

>>> partition_prefix(AUGMENTED, "2026-01-02")
'augmented/day=2026-01-02/'
>>> fm_pred_column("click")
'fm_pred_click'
>>> vm_state_key("exfm-vm-d0-click", "2026-01-02")
'state/vm/exfm-vm-d0-click/day=2026-01-02/trainer_state.pt'
"""

from __future__ import annotations

RAW = "raw"
FEATURES = "raw/features"
LABELS = "raw/labels"
PENDING = "das/pending"
AUGMENTED = "augmented"
STATE = "state"
RAY_FM = "ray/fm"  # Ray Train's storage_path for FM runs, under the bucket

MANIFEST = "_manifest.json"
SCHEMA_KEY = f"{RAW}/_schema.yaml"

FM_PRED_PREFIX = "fm_pred_"
VERSION_COL = "fm_version"  # the FM version that produced a row's fm_pred_* columns


def partition_prefix(prefix: str, day: str) -> str:
    """The folder of one day's partition: ``<prefix>/day=D/``."""
    return f"{prefix}/day={day}/"


def stats_key(prefix: str, day: str) -> str:
    """The data gate's statistics of one committed day (rows, label rates, FM means)."""
    return f"{partition_prefix(prefix, day)}_stats.json"


def docs_prefix(prefix: str, day: str) -> str:
    """Where the data gate uploads that day's great-expectations Data Docs."""
    return f"{partition_prefix(prefix, day)}_gx_docs/"


def fm_pred_column(task: str) -> str:
    """Name of the column holding the FM's logged prediction for ``task``."""
    return f"{FM_PRED_PREFIX}{task}"


def is_fm_column(name: str) -> bool:
    """A column DAS adds (``fm_pred_<task>`` or ``fm_version``)."""
    return name.startswith(FM_PRED_PREFIX) or name == VERSION_COL


def vm_state_key(registered: str, day: str) -> str:
    """Where a VM's trainer state of ``day`` lives (``registered`` = its registered model)."""
    return f"{STATE}/vm/{registered}/day={day}/trainer_state.pt"

"""The allowed kinds and modes, each written once as a ``Literal``.

The config fields are typed with these ``Literal`` s (pydantic refuses anything else, naming the
dotted key); the tuples code iterates or checks against are their ``get_args``, so the two
cannot drift apart.

Example:
    >>> DISTILL_MODES
    ('none', 'vanilla', 'ah', 'ah_sa')
"""

from __future__ import annotations

from typing import Literal, get_args

FmKind = Literal["dcn", "dcnv2", "dmin", "mtl"]
"""Foundation-model architectures (``models.fm``), see :mod:`exfm.models.foundation`."""

VmKind = Literal["fam", "fmfam", "deepfam", "dlrm", "two_tower"]
"""Vertical-model backbones (``vms[].model``), see :mod:`exfm.models.vertical`."""

DistillMode = Literal["none", "vanilla", "ah", "ah_sa"]
"""How a VM takes the FM's supervision (METHOD.md eqs 1, 2, 5, 7), see :mod:`exfm.distill.losses`."""

Stage = Literal["retrieval", "early", "late"]
"""Funnel stages: the ``stage`` column of our sources and ``vms[].stage``."""

DataSource = Literal["generate", "movielens", "dir"]
DatabaseKind = Literal["sqlite", "postgres"]
EmbeddingOptimizer = Literal["sparse_adam", "adam"]
TuneMetric = Literal["auc", "ne"]

FM_KINDS: tuple[str, ...] = get_args(FmKind)
VM_KINDS: tuple[str, ...] = get_args(VmKind)
DISTILL_MODES: tuple[str, ...] = get_args(DistillMode)
STAGES: tuple[str, ...] = get_args(Stage)
TUNE_METRICS: tuple[str, ...] = get_args(TuneMetric)

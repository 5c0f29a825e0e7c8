"""Model zoo: the foundation model (teacher), the vertical models (students), snapshots.

Layers by role: ``embeddings`` (fused table, field encoder), ``interactions`` (FM, FmFM, DCN
cross, DLRM dots), ``attention`` (DIN, DMIN), ``blocks`` (MLP), ``gradient_scaling`` (GS, the
identity with a scaled backward). Models: ``foundation``, ``vertical``. Factories in ``build``; persistence and inference in ``snapshot``.
"""

from exfm.models.build import (build_fm, build_vm, count_parameters, model_from_spec, model_spec,
                               unwrap)
from exfm.models.foundation import FM_KINDS, FoundationModel
from exfm.models.snapshot import load_snapshot, predict_table, save_snapshot
from exfm.models.vertical import VM_KINDS, VerticalModel

__all__ = ["build_fm", "build_vm", "count_parameters", "model_from_spec", "model_spec", "unwrap",
           "FM_KINDS", "FoundationModel", "load_snapshot", "predict_table", "save_snapshot",
           "VM_KINDS", "VerticalModel"]

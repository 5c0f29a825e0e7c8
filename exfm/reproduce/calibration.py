"""Theorem 3.1, checked: a mis-calibrated FM mis-calibrates a vanilla-KD VM, not an AH VM.

The FM's logged predictions are multiplied by ``scale`` (clipped at 1) to make the teacher
mis-calibrated on purpose. Vanilla KD puts that target on the serving head, so the served
prediction moves towards it; with the Auxiliary Head the serving head sees only true labels and
stays where the no-distillation VM is.

Example:
    >>> out = calibration_check(fm_days, vm_days, test, schema, cfg)   # doctest: +SKIP
    >>> out["calibration"]["vanilla"], out["calibration"]["ah"]          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from exfm.config import ExfmConfig, VMConfig
from exfm.data.schema import DatasetSchema
from exfm.reproduce.protocol import ARM_MODE, with_fm_pred

CHECK_ARMS = ("wo", "vanilla", "ah")


def calibration_check(fm_days: list[pa.Table], vm_days: list[pa.Table], test: pa.Table,
                      schema: DatasetSchema, cfg: ExfmConfig, fm_kind: str | None = None,
                      vm_kind: str = "deepfam", task: str | None = None,
                      scale: float = 2.0) -> dict[str, Any]:
    """Stream an FM over ``fm_days``, log its predictions x ``scale`` on each VM day (the FM keeps
    training day by day, as in the protocol), train one VM per arm on ``vm_days`` (same init,
    same rows), score all on ``test``.

    Returns:
        ``{"calibration": {arm: sum p / sum y on test}, "mean_pred_ratio": {arm: sum p_arm /
        sum p_wo} (label noise cancels), "auc": {arm: ...}, "fm_calibration": calibration of the
        scaled FM predictions on the VM days}``.
    """
    from exfm.models import build_fm, build_vm, predict_table
    from exfm.train import evaluate, train_fm_day, train_vm_day
    from exfm.train.metrics import calibration

    task = task or schema.labels[0]
    tasks = list(schema.labels)
    fm = build_fm(schema, tasks, cfg, fm_kind)
    state = None
    for day in fm_days:
        state = train_fm_day(fm, day, schema, cfg, state=state).state
    logged, ys, ps = [], [], []
    for day in vm_days:  # DAS: infer with the current FM, then the FM trains on the day
        p = np.minimum(scale * predict_table(fm, day, schema), 1.0)
        logged.append(with_fm_pred(day, tasks, p))
        ys.append(np.asarray(day.column(task).to_numpy(zero_copy_only=False), np.float64))
        ps.append(p[:, tasks.index(task)])
        state = train_fm_day(fm, day, schema, cfg, state=state).state
    out: dict[str, Any] = {"calibration": {}, "auc": {}, "mean_pred_ratio": {},
                           "fm_calibration": calibration(np.concatenate(ys), np.concatenate(ps))}
    sums = {}
    for arm in CHECK_ARMS:
        vm = VMConfig(name=f"cal-{arm.replace('_', '-')}", model=vm_kind, task=task,
                      mode=ARM_MODE[arm], control=False)
        model, vstate = build_vm(vm, schema, cfg), None
        for day in logged:
            vstate = train_vm_day(model, day, schema, vm, cfg, state=vstate).state
        m = evaluate(model, test, schema, task)
        out["calibration"][arm] = m["calibration"]
        out["auc"][arm] = m["auc"]
        sums[arm] = float(predict_table(model, test, schema)[:, 0].sum())
    out["mean_pred_ratio"] = {a: sums[a] / sums["wo"] for a in CHECK_ARMS}
    return out

"""FM blessing: a new FM snapshot is leased to the DAS only when it is not worse than the serving
one on the day's rows and its predictions have not collapsed.

Before the DAS of day ``d`` picks its snapshot, :func:`bless_fm` scores the newest FM version
trained before ``d`` (the candidate) and the one that would serve without it (the newest older
version not refused) on the first
``fm_blessing.max_rows`` rows of ``raw/day=d`` (rows neither has trained on) with the head of
``fm_blessing.task``; :func:`judge_fm` decides. The verdict is tagged on the candidate
(``blessed=true|false``, ``blessing.*`` with both figures and the reason). The DAS's snapshot
choice (:func:`exfm.registry.chain.das_fm_version`, also the updater's) skips versions tagged
``blessed=false``: it keeps the old snapshot, and the freshness gap grows, and shows.
A version never judged (no blessing task ran) is leased as before.

:func:`fm_day_of` and :func:`vm_freshness` give a VM task its FM's training day and the freshness
policy's verdict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from exfm.config import ExfmConfig
from exfm.config.promotion import FMBlessingConfig
from exfm.promotion.freshness import FreshnessVerdict, enforce_freshness
from exfm.promotion.rules import check_not_worse, in_band
from exfm.registry.chain import fm_day_of

BLESSED_TAG = "blessed"


@dataclass
class Blessing:
    """``blessed`` (True/False, None = nothing to judge), the figures and why."""

    blessed: bool | None
    reason: str
    metric: str
    # the metric of both snapshots on the same rows
    candidate: float | None = None
    serving: float | None = None
    # the collapse check: the candidate's mean prediction, the rows' label rate, the spread
    mean_pred: float | None = None
    label_rate: float | None = None
    pred_std: float | None = None
    # what was compared, for which day
    candidate_version: str | None = None
    serving_version: str | None = None
    day: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        out = {f"blessing.{k}": (v if isinstance(v, str) else json.dumps(v))
               for k, v in self.as_dict().items() if v is not None and k != "blessed"}
        out[BLESSED_TAG] = "true" if self.blessed else "false"
        return out


def judge_fm(fb: FMBlessingConfig, y, p_candidate, p_serving=None) -> Blessing:
    """Pure: is the candidate's prediction ``p_candidate`` (labels ``y``) fit to serve, compared
    with the serving snapshot's ``p_serving`` on the same rows (None: nothing serves yet)?

    Example:
        >>> b = judge_fm(FMBlessingConfig(), [0, 1, 0, 1], [0.001] * 4)
        >>> b.blessed, b.reason.startswith("collapsed")
        (False, True)
    """
    from exfm.train.metrics import all_metrics

    y, pc = np.asarray(y, dtype=np.float64), np.asarray(p_candidate, dtype=np.float64)
    b = Blessing(None, "", fb.metric, mean_pred=float(pc.mean()), label_rate=float(y.mean()),
                 pred_std=float(pc.std()))
    b.candidate = all_metrics(y, pc)[fb.metric]
    ratio = b.mean_pred / b.label_rate if b.label_rate > 0 else float("nan")
    if b.pred_std < fb.min_pred_std:
        b.blessed, b.reason = False, (f"collapsed: predictions constant (std {b.pred_std:.2e} < "
                                      f"{fb.min_pred_std:g})")
        return b
    if not in_band(ratio, fb.collapse_band):
        b.blessed, b.reason = False, (f"collapsed: mean prediction {b.mean_pred:.4g} / label rate "
                                      f"{b.label_rate:.4g} = {ratio:.3g} outside "
                                      f"{list(fb.collapse_band)}")
        return b
    if p_serving is None:
        b.blessed, b.reason = True, f"first snapshot ({fb.metric} {b.candidate:.5f}, not collapsed)"
        return b
    b.serving = all_metrics(y, np.asarray(p_serving, dtype=np.float64))[fb.metric]
    c = check_not_worse(fb.metric, b.candidate, b.serving, fb.max_abs_worsening,
                        fb.max_rel_worsening, against="serving")
    b.blessed, b.reason = c.ok, c.reason
    return b


def bless_fm(cfg: ExfmConfig, day: str, table=None, log: Callable[[str], None] = print) -> Blessing:
    """Judge the newest FM version trained before ``day`` against the serving one on day ``day``'s
    rows (``table``, else ``raw/day=day``) and tag the verdict on it. Idempotent for the day."""
    from exfm.models.snapshot import predict_table
    from exfm.registry.chain import das_fm_version
    from exfm.registry.mlflow_registry import connect, fm_model_name, latest_fm_version, load_fm

    fb, name = cfg.fm_blessing, fm_model_name(cfg)
    cand = latest_fm_version(cfg, before_day=day)
    if cand is None:
        return Blessing(None, f"{name}: no version trained before {day}", fb.metric, day=day)
    client = connect(cfg)
    tags = client.get_model_version(name, cand).tags
    serving = das_fm_version(cfg, day, skip=cand)  # fixed by the date, not by the live lease
    if tags.get(BLESSED_TAG) in ("true", "false") or not fb.enabled:
        why = "already judged" if tags.get(BLESSED_TAG) else "fm_blessing.enabled is false"
        return Blessing(tags.get(BLESSED_TAG, "true") == "true", why, fb.metric,
                        candidate_version=cand, serving_version=serving, day=day)
    if table is None:
        from exfm.storage.layout import RAW
        from exfm.storage.partitions import PartitionStore

        table = PartitionStore(cfg, RAW).stream_day(day).head(fb.max_rows)  # not the whole day
    table = table.slice(0, fb.max_rows)
    model, _ = load_fm(cfg, cand)
    task = fb.task or model.tasks[0]
    col = model.tasks.index(task)
    y = np.asarray(table.column(task).to_numpy(zero_copy_only=False), dtype=np.float64)
    p_serving = None
    if serving is not None:
        p_serving = predict_table(load_fm(cfg, serving)[0], table)[:, col]
    b = judge_fm(fb, y, predict_table(model, table)[:, col], p_serving)
    b.candidate_version, b.serving_version, b.day = cand, serving, day
    for k, v in b.tags().items():
        client.set_model_version_tag(name, cand, k, v)
    log(f"FM blessing {day}: {name} v{cand} {'blessed' if b.blessed else 'NOT blessed'}: "
        f"{b.reason}")
    return b


def vm_freshness(cfg: ExfmConfig, day: str, fm_version: str | None) -> FreshnessVerdict:
    """The freshness verdict of a VM's day taught by ``fm_version``; raises
    :class:`~exfm.promotion.freshness.StaleFMError` under ``freshness.policy: fail``."""
    return enforce_freshness(cfg.freshness, day, fm_day_of(cfg, fm_version))

"""The Auxiliary Head's amplifiers (GS alpha, LS beta, LW w; METHOD.md eq. 5) tuned by the VM
itself on an earlier day, never on the day it is scored on.

One fresh VM per candidate (same init, same rows, the VM's own mode: ``ah`` or ``ah_sa``) trains one pass on ``train`` (an
earlier day that carries the FM's predictions) and is scored, serving head only, on ``valid``
(the day after it, still before any scored day). The best candidate by ``tune_metric`` wins;
ties keep the earlier candidate, and the configured (gs, ls, lw) is tried first, so a flat
landscape keeps the defaults. The paper's hyper-parameter study (figs. 11, 12) is why: LW and LS
help up to a point and GS has a sweet spot that moves with the data, so no fixed triple is right
for every dataset.

The AH can also step back: ``tune_step_back`` adds a weak backbone pull and none (GS = 0: the
AH's and SA's gradients never reach the backbone, so the served head trains as without
distillation). A teacher barely ahead of its student (MovieLens: +1..2 AUC points) teaches
little but still pulls the shared backbone towards its own errors; the earlier-day score then
prefers a weak pull or none, while a teacher well ahead keeps a strong one. The choice is the
same rule on every dataset: nothing is fitted to one.

Example:
    >>> res = tune_amplifiers(day4_with_fm, day5, schema, vm, cfg)   # doctest: +SKIP
    >>> res.best.gs, res.best.ls, res.best.lw                         # doctest: +SKIP
    (4.0, 1.0, 3.0)
    >>> cfg = res.apply(cfg)                                          # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from exfm.config import ExfmConfig, VMConfig
from exfm.config.kinds import TUNE_METRICS, DistillMode
from exfm.data.schema import DatasetSchema

TUNED_MODES: tuple[DistillMode, ...] = ("ah", "ah_sa")  # the modes with amplifiers to tune


@dataclass(frozen=True)
class Trial:
    """One candidate and how its VM scored on the validation day."""

    gs: float
    ls: float
    lw: float
    auc: float
    ne: float
    logloss: float
    calibration: float
    steps: int

    @property
    def params(self) -> tuple[float, float, float]:
        return (self.gs, self.ls, self.lw)


@dataclass
class TuneResult:
    """The winner, every trial in the order tried, and what ranked them."""

    best: Trial
    trials: list[Trial] = field(default_factory=list)
    metric: str = "auc"

    def apply(self, cfg: ExfmConfig) -> ExfmConfig:
        """A copy of ``cfg`` with the winner's gs/ls/lw (the rest of the config unchanged)."""
        d = cfg.distillation.model_copy(update=dict(gs=self.best.gs, ls=self.best.ls,
                                                    lw=self.best.lw))
        return cfg.model_copy(update={"distillation": d})

    def records(self) -> list[dict]:
        return [dict(asdict(t), chosen=t.params == self.best.params) for t in self.trials]


def candidates(cfg: ExfmConfig) -> list[tuple[float, float, float]]:
    """The configured (gs, ls, lw) first, then tune_gs x tune_ls x tune_lw, then the step-back
    pulls ``tune_step_back`` at the configured ls, lw (no duplicates). Step-back candidates come
    last, so on a tie the AH keeps pulling."""
    d = cfg.distillation
    out = [(d.gs, d.ls, d.lw)]
    step_back = [(g, d.ls, d.lw) for g in d.tune_step_back]
    for c in [*itertools.product(d.tune_gs, d.tune_ls, d.tune_lw), *step_back]:
        c = tuple(float(x) for x in c)
        if c not in out:
            out.append(c)
    return out


def pick(trials: list[Trial], metric: str = "auc") -> Trial:
    """Highest AUC (or lowest NE); NaN scores lose; a tie keeps the earlier trial."""
    if not trials:
        raise ValueError("no trials to pick from")
    if metric not in TUNE_METRICS:
        raise ValueError(f"unknown tuning metric {metric!r}; expected one of {TUNE_METRICS}")
    sign = 1.0 if metric == "auc" else -1.0

    def score(t: Trial) -> float:
        v = getattr(t, metric)
        return -math.inf if v is None or math.isnan(v) else sign * v

    best = trials[0]
    for t in trials[1:]:
        if score(t) > score(best):
            best = t
    return best


def tune_amplifiers(train: pa.Table, valid: pa.Table, schema: DatasetSchema, vm: VMConfig,
                    cfg: ExfmConfig,
                    on_trial: Callable[[Trial], None] | None = None) -> TuneResult:
    """Try every :func:`candidates` triple on (``train`` -> ``valid``); see the module doc.

    Args:
        train: an earlier day with ``fm_pred_<vm.task>`` (the VM's slice already taken).
        valid: the day after ``train``, with labels; never a day the VM is scored on.
        vm: the VM to tune, in its own mode (``ah`` or ``ah_sa``; ``sa_weight`` stays as set).
        on_trial: called after each candidate (progress).
    """
    from exfm.models import build_vm
    from exfm.train.trainer import evaluate, resolve_mode, train_vm_day

    mode = resolve_mode(vm, cfg)
    if mode not in TUNED_MODES:
        raise ValueError(f"VM '{vm.name}': mode {mode!r} has no amplifiers to tune "
                         f"(only {TUNED_MODES})")

    if train.num_rows == 0 or valid.num_rows == 0:
        raise ValueError(f"VM '{vm.name}': tuning needs rows on both days "
                         f"(train {train.num_rows}, valid {valid.num_rows})")
    probe = vm.model_copy(update={"mode": mode, "control": False})
    trials: list[Trial] = []
    for gs, ls, lw in candidates(cfg):
        d = cfg.distillation.model_copy(update=dict(gs=gs, ls=ls, lw=lw))
        c = cfg.model_copy(update={"distillation": d})
        model = build_vm(probe, schema, c, sample=train)
        res = train_vm_day(model, train, schema, probe, c)
        m = evaluate(model, valid, schema, vm.task)
        t = Trial(gs, ls, lw, m["auc"], m["ne"], m["logloss"], m["calibration"], res.steps)
        trials.append(t)
        if on_trial:
            on_trial(t)
    metric = cfg.distillation.tune_metric
    return TuneResult(pick(trials, metric), trials, metric)

"""What decides what serves and who is told: the VM promotion gate, FM blessing, the freshness
policy, on-call alerts and the daily run's deadline (``promotion``, ``fm_blessing``,
``freshness``, ``oncall``, ``deadline`` in ``params.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from exfm.config.base import StrictModel

GateMetric = Literal["ne", "auc", "logloss"]
FreshnessPolicy = Literal["fail", "degraded"]
DeadlineReference = Literal["queued_at", "logical_date"]


class PromotionConfig(StrictModel):
    """The VM promotion gate: ``@challenger`` -> ``@champion`` when not worse on the day's rows.

    Worsening is measured MLflow ``MetricThreshold``-style: ``challenger - champion`` for a
    lower-is-better metric (NE, LogLoss), ``champion - challenger`` for AUC; the challenger passes
    when the worsening is at most ``max_abs_worsening`` and, if set, at most
    ``max_rel_worsening`` x |champion|. The same rule compares it with its control arm."""

    enabled: bool = Field(True, description="false: no gate runs, aliases are never moved")
    metric: GateMetric = Field("ne", description="the metric the gate compares (ne, auc, logloss)")
    max_abs_worsening: float = Field(
        0.0, ge=0, description="largest absolute worsening of the metric a challenger may show "
        "against the champion (and its control arm) and still be promoted")
    max_rel_worsening: float | None = Field(
        None, ge=0, description="largest relative worsening (fraction of the champion's figure); "
        "null = only the absolute margin applies")
    vs_control: bool = Field(True, description="also require the challenger to be not worse than "
                             "its control arm (the same VM trained without FM) by the same margin")
    calibration_band: tuple[float, float] = Field(
        (0.8, 1.25), description="served calibration (sum p / sum y on the day's slice) outside "
        "[low, high] flags the challenger and refuses its promotion")
    min_rows: int = Field(200, ge=1, description="fewer rows in the day's slice: no decision "
                          "(the aliases stay), recorded as such")

    @model_validator(mode="after")
    def _band(self) -> "PromotionConfig":
        lo, hi = self.calibration_band
        if not 0 < lo < 1 < hi:
            raise ValueError(f"promotion.calibration_band: need 0 < low < 1 < high, got {lo}, {hi}")
        return self


class FMBlessingConfig(StrictModel):
    """FM blessing: a new snapshot is leased to the DAS only when it is not worse than the serving
    one on the day's rows and its predictions have not collapsed."""

    enabled: bool = Field(True, description="false: every new FM snapshot is leased (no check)")
    metric: GateMetric = Field("ne", description="metric compared on the day's rows "
                               "(the FM's task named by fm_blessing.task)")
    task: str | None = Field(None, description="the FM task whose head is judged; null = the "
                             "FM's first task")
    max_abs_worsening: float = Field(0.01, ge=0, description="largest absolute worsening of the "
                                     "metric against the serving snapshot")
    max_rel_worsening: float | None = Field(None, ge=0, description="largest relative worsening; "
                                            "null = only the absolute margin applies")
    collapse_band: tuple[float, float] = Field(
        (0.2, 5.0), description="mean prediction / label rate (the calibration) outside "
        "[low, high] means the predictions collapsed: not blessed")
    min_pred_std: float = Field(1e-4, ge=0, description="predictions whose standard deviation is "
                                "below this are constant (collapsed): not blessed")
    max_rows: int = Field(20000, ge=100, description="rows of the day scored (the first N, in "
                          "arrival order)")


class FreshnessConfig(StrictModel):
    """The FM freshness gap: days between a day and the training day of the FM that taught it."""

    max_gap_days: int = Field(3, ge=1, description="a gap above this fires the freshness alert "
                              "and applies freshness.policy")
    policy: FreshnessPolicy = Field(
        "degraded", description="above max_gap_days: fail (the VM task fails with the gap) or "
        "degraded (the VM trains without FM supervision, tagged degraded=true)")


class OncallConfig(StrictModel):
    """Failure alerts: one readable message per failed task, in the log and to a webhook."""

    webhook_url: str | None = Field(None, description="POST each alert as JSON here (Slack/Teams/"
                                    "Alertmanager-style endpoint); null = log only. A secret "
                                    "URL belongs in env EXFM_ONCALL_WEBHOOK_URL, not this file")
    timeout_s: float = Field(5.0, gt=0, description="webhook request timeout")
    log_lines: int = Field(15, ge=1, description="last lines of the error kept in the alert")
    airflow_base_url: str | None = Field(None, description="Airflow UI base for log links; null "
                                         "= the embedded one on host and ports.airflow")
    mlflow_base_url: str | None = Field(None, description="MLflow UI base for run links; null = "
                                        "the tracking URI")


class DeadlineConfig(StrictModel):
    """Airflow 3 ``DeadlineAlert`` on the daily run (wired in ``dags/exfm_daily.py``; its
    callback :func:`exfm.oncall.deadline_missed` runs in the triggerer)."""

    enabled: bool = Field(True, description="false: no deadline on the daily run")
    minutes: int = Field(240, ge=1, description="a daily run not finished this many minutes after "
                         "its reference fires the on-call alert")
    reference: DeadlineReference = Field(
        "queued_at", description="queued_at: from when the run was queued (a backfilled or "
        "re-run day gets the same time budget as today's); logical_date: from the run's logical "
        "date (for a backfill of past days the deadline has passed before the run starts)")

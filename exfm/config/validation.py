"""``validation:``: the bounds and bands of the data gates (``exfm.validation``).

Bands compare a day with the mean of its trailing committed days: a value passes when
``band[0] * trailing <= value <= band[1] * trailing``. With no trailing day yet, only the fixed
bounds apply.

>>> ValidationConfig().row_count_band
(0.5, 2.0)
"""

from __future__ import annotations

from pydantic import Field, model_validator

from exfm.config.base import StrictModel

Band = tuple[float, float]


class ValidationConfig(StrictModel):
    """Data gates on a raw day and on an augmented day (docs/validation.md)."""

    trailing_days: int = Field(default=7, ge=1, description="days the bands compare against")
    min_rows: int = Field(default=1, ge=1, description="fewest rows a day may hold")
    label_rate_bounds: Band = Field(default=(0.0005, 0.9995),
                                    description="every label's positive rate, fixed bounds")
    label_rate_overrides: dict[str, Band] = Field(default_factory=dict,
                                                  description="per-label bounds (label -> band)")
    label_rate_band: Band = (0.5, 2.0)
    row_count_band: Band = (0.5, 2.0)
    fm_pred_mean_band: Band = (0.5, 2.0)
    min_coverage: float = Field(default=1.0, gt=0, le=1,
                                description="augmented rows / raw rows of the day, at least")
    upload_docs: bool = Field(default=True, description="upload Data Docs to the bucket")

    @model_validator(mode="after")
    def _ordered(self) -> "ValidationConfig":
        bands = dict(label_rate_bounds=self.label_rate_bounds, label_rate_band=self.label_rate_band,
                     row_count_band=self.row_count_band, fm_pred_mean_band=self.fm_pred_mean_band,
                     **{f"label_rate_overrides.{k}": v for k, v in
                        self.label_rate_overrides.items()})
        for name, (lo, hi) in bands.items():
            if not 0 <= lo <= hi:
                raise ValueError(f"validation.{name}: need 0 <= low <= high, got [{lo}, {hi}]")
        return self

    def rate_bounds(self, label: str) -> Band:
        return self.label_rate_overrides.get(label, self.label_rate_bounds)

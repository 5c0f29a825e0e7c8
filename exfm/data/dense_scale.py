"""Dense inputs on a scale models can take, whatever units a dataset logs them in.

A dataset may log a dense column in raw units: a document length in characters, a price in cents,
a count. Fed as is, values in the thousands saturate an MLP's first layer and blow up a cross
network's products (``x0 * (W x)``), and the model learns little. A model therefore fixes, when it
is built, how it reads each dense column (:class:`DenseScale`, part of its input schema, so a
snapshot and every warm start on a later day keep it):

- a column whose values on the fit sample all lie within ``+-IN_SCALE`` (standardized features,
  rates, ages in weeks, times of day in [0, 1)) is read as given;
- any other is mapped to ``sign(x) * log1p(|x|)`` (heavy tails of counts, lengths and prices
  become near-normal; the order of values is kept), standardized with the mean and standard
  deviation of that on the fit sample, and clipped to ``+-CLIP`` (a later day's outlier cannot
  blow up a step).

The fit sample is the first ``FIT_ROWS`` rows of the first table the model is built for (its
first training day, in arrival order), so a re-run fits the same scales.

Example:
    >>> import numpy as np
    >>> s = fit_scale("doc_len", np.array([120.0, 800.0, 5000.0, 40.0]))
    >>> bool(np.abs(apply_scale(np.array([120.0, 800.0, 9e9]), s)).max() <= CLIP)
    True
    >>> fit_scale("hour", np.array([0.1, 0.7])) is None    # already on a unit scale
    True
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

IN_SCALE = 16.0  # |x| at most this on the fit sample: read as given
CLIP = 8.0  # a rescaled value is clipped to +-CLIP standard deviations
FIT_ROWS = 100_000  # rows of the first table the scales are fitted on


class DenseScale(BaseModel):
    """How a model reads dense column ``column``: ``clip((slog(x) - center) / scale)``."""

    model_config = ConfigDict(extra="forbid")

    column: str
    center: float
    scale: float


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_scale(column: str, values: np.ndarray) -> DenseScale | None:
    """The scale of one column from its fit-sample ``values`` (None = read as given)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0 or np.abs(x).max() <= IN_SCALE:
        return None
    z = signed_log(x)
    std = float(z.std())
    return DenseScale(column=column, center=float(z.mean()), scale=std if std > 1e-6 else 1.0)


def apply_scale(values: np.ndarray, s: DenseScale) -> np.ndarray:
    """``values`` (float32) as the model reads them under ``s``."""
    z = (signed_log(values.astype(np.float64)) - s.center) / s.scale
    return np.clip(z, -CLIP, CLIP).astype(np.float32)

"""The expectation suites, built in Python from the dataset schema and ``validation:`` config on
every run (so they are versioned with the code, never edited by hand in the GX folder).

Each :class:`Check` pairs a great-expectations expectation with the rule it enforces in words and
the expected value in words; :mod:`exfm.validation.gates` turns failed checks into reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exfm.config.validation import ValidationConfig
from exfm.data.schema import DatasetSchema
from exfm.data.validate import day_bounds
from exfm.storage.layout import VERSION_COL, fm_pred_column
from exfm.validation.stats import band

SUITE_VERSION = "1"  # bump when a rule changes meaning; stored in each suite's meta
RAW_SUITE = "exfm_raw_day"
AUGMENTED_SUITE = "exfm_augmented_day"

INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
STR_TYPES = ["object", "str", "string"]
FLOAT_TYPES = ["float32", "float64"]


@dataclass(frozen=True)
class Check:
    expectation: Any  # a great_expectations.expectations.Expectation
    rule: str
    expected: str

    @property
    def column(self) -> str | None:
        return getattr(self.expectation, "column", None)


def _e():
    from exfm.validation.context import gx_module

    return gx_module().expectations


def _column_checks(schema: DatasetSchema) -> list[Check]:
    E = _e()
    out: list[Check] = []
    typed = [(schema.timestamp, ["int64"], "int64 epoch seconds")]
    if schema.request_id:
        typed.append((schema.request_id, INT_TYPES + STR_TYPES, "an integer or a string"))
    if schema.domain:
        typed.append((schema.domain, INT_TYPES + STR_TYPES + ["category"], "a string or integer"))
    if schema.stage:
        typed.append((schema.stage, STR_TYPES, "a string"))
    typed += [(c, INT_TYPES, "an integer 0/1 type") for c in schema.labels]
    typed += [(f.name, ["int64"], "int64 ids") for f in schema.sparse]
    typed += [(c, FLOAT_TYPES, "float32/float64") for c in schema.dense]
    for c in schema.columns:
        out.append(Check(E.ExpectColumnToExist(column=c), "schema column present",
                         "the column to exist"))
    for c, types, words in typed:
        out.append(Check(E.ExpectColumnValuesToBeInTypeList(column=c, type_list=types),
                         "schema column type", words))
    keys = [schema.timestamp] + [c for c in (schema.request_id, schema.domain, schema.stage) if c]
    for c in keys + schema.labels:
        out.append(Check(E.ExpectColumnValuesToNotBeNull(column=c),
                         "key not null" if c in keys else "label not null", "no nulls"))
    return out


def _mean_band(column: str, trailing: list[dict], path: str, ratio: tuple[float, float],
               rule: str, what: str, anchor: tuple[str, float | None] | None = None) -> list[Check]:
    """The column's mean within ``ratio`` x the trailing days' mean of ``path`` (none: []).

    ``anchor`` = (its name, a value): the mean may instead lie within ``ratio`` x that value; the
    two ranges are joined into one (their hull)."""
    b = band(trailing, path, ratio)
    if not b:
        return []
    lo, hi = b
    parts = [f"trailing days' {what} x {list(ratio)} = [{lo:.4g}, {hi:.4g}]"]
    if anchor is not None and anchor[1] is not None and anchor[1] > 0:
        name, v = anchor
        lo, hi = min(lo, ratio[0] * v), max(hi, ratio[1] * v)
        parts.append(f"{name} {v:.4g} x {list(ratio)} = [{ratio[0] * v:.4g}, {ratio[1] * v:.4g}]")
    return [Check(_e().ExpectColumnMeanToBeBetween(column=column, min_value=lo, max_value=hi),
                  rule, f"{what} in [{lo:.4g}, {hi:.4g}] ({'; or '.join(parts)})")]


def raw_checks(schema: DatasetSchema, day: str, trailing: list[dict],
               vcfg: ValidationConfig) -> list[Check]:
    """The raw-day suite: schema columns and types, non-null keys, labels in {0,1}, label rates
    within bounds and the trailing band, ids within vocab, rows within the trailing band,
    timestamps inside the day, unique request ids."""
    E = _e()
    out = _column_checks(schema)
    lo_rows = float(vcfg.min_rows)
    hi_rows = None
    rb = band(trailing, "rows", vcfg.row_count_band)
    if rb:
        lo_rows, hi_rows = max(lo_rows, rb[0]), rb[1]
    out.append(Check(E.ExpectTableRowCountToBeBetween(min_value=int(lo_rows),
                                                      max_value=None if hi_rows is None
                                                      else int(hi_rows)),
                     "row count within the trailing band" if rb else "row count at least min_rows",
                     f"[{int(lo_rows)}, {'inf' if hi_rows is None else int(hi_rows)}] rows"))
    for c in schema.labels:
        out.append(Check(E.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1]),
                         "labels in {0, 1}", "values in [0, 1]"))
        lo, hi = vcfg.rate_bounds(c)
        out.append(Check(E.ExpectColumnMeanToBeBetween(column=c, min_value=lo, max_value=hi),
                         "label rate within configured bounds", f"rate in [{lo:g}, {hi:g}]"))
        out += _mean_band(c, trailing, f"label_rate/{c}", vcfg.label_rate_band,
                          "label rate within the trailing band", "label rate")
    for f in schema.sparse:
        out.append(Check(E.ExpectColumnValuesToBeBetween(column=f.name, min_value=0,
                                                         max_value=f.vocab - 1),
                         "ids within vocab", f"ids in [0, {f.vocab - 1}]"))
    bounds = day_bounds(day)
    if bounds:
        out.append(Check(E.ExpectColumnValuesToBeBetween(column=schema.timestamp,
                                                         min_value=bounds[0],
                                                         max_value=bounds[1] - 1),
                         "timestamps inside the day",
                         f"epoch seconds in [{bounds[0]}, {bounds[1] - 1}] ({day} UTC)"))
    if schema.request_id:
        out.append(Check(E.ExpectColumnValuesToBeUnique(column=schema.request_id),
                         "unique request ids", "no duplicates"))
    return out


def augmented_checks(schema: DatasetSchema, day: str, raw_rows: int | None, trailing: list[dict],
                     vcfg: ValidationConfig,
                     label_rates: dict[str, float | None] | None = None) -> list[Check]:
    """The augmented-day suite: every ``fm_pred_<label>`` in [0, 1] and non-null, ``fm_version``
    set, the raw day's rows covered, the FM's mean prediction within the trailing band or near
    the day's own label rate (``label_rates``: label -> the day's rate, from its rows)."""
    E = _e()
    out = [Check(E.ExpectColumnToExist(column=VERSION_COL), "fm_version set", "the column to exist"),
           Check(E.ExpectColumnValuesToNotBeNull(column=VERSION_COL), "fm_version set",
                 "no nulls")]
    for label in schema.labels:
        c = fm_pred_column(label)
        out += [
            Check(E.ExpectColumnToExist(column=c), "FM prediction present", "the column to exist"),
            Check(E.ExpectColumnValuesToNotBeNull(column=c), "FM prediction not null", "no nulls"),
            Check(E.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0),
                  "FM prediction in [0, 1]", "values in [0, 1]"),
        ]
        # An FM that collapses (or blows up) fails; one that improves towards the labels it
        # predicts does not.
        out += _mean_band(c, trailing, f"fm_pred_mean/{c}", vcfg.fm_pred_mean_band,
                          "FM mean prediction within the trailing band", "FM mean",
                          anchor=("the day's label rate", (label_rates or {}).get(label)))
    lo = max(int(vcfg.min_rows), int(-(-vcfg.min_coverage * (raw_rows or 0) // 1)))
    out.append(Check(E.ExpectTableRowCountToBeBetween(min_value=lo, max_value=raw_rows),
                     "row coverage of the raw day",
                     f"[{lo}, {raw_rows}] rows (raw day has {raw_rows}, min_coverage "
                     f"{vcfg.min_coverage:g})" if raw_rows is not None else f">= {lo} rows"))
    return out

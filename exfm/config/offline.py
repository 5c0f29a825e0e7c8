"""``offline:``: what the DVC pipeline (``dvc.yaml``, ``exfm offline <stage>``) reproduces.

The defaults keep ``dvc repro`` small (one FM, one VM, two arms, one seed, 6 short days, the
quick models of ``exfm reproduce --quick``); docs/dvc.md shows the full grid.

>>> OfflineConfig().arms
['wo', 'ah']
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from exfm.config.base import StrictModel


class OfflineConfig(StrictModel):
    """The offline reproduction's data and grid (the main table: FM x VM x arm) and which other
    tables of `exfm reproduce` it runs."""

    source: Literal["generate", "movielens", "folder"] = "generate"
    folder: str | None = Field(default=None, description="source=folder: a dataset folder in "
                                                         "the bring-your-own format")
    days: int = Field(default=6, ge=3, description="source=generate: days written")
    rows_per_day: int = Field(default=2000, ge=100, description="source=generate: rows a day")
    max_rows_per_day: int | None = Field(default=None, ge=100,
                                         description="thin every day to at most this many rows")
    fm_days: int = Field(default=4, ge=1, description="days the FM trains before the first "
                                                      "VM day")
    seeds: int = Field(default=1, ge=1)
    fms: list[str] = Field(default_factory=lambda: ["dcnv2"], min_length=1)
    vms: list[str] = Field(default_factory=lambda: ["fam"], min_length=1)
    arms: list[Literal["wo", "vanilla", "ah", "ah_sa", "plain"]] = Field(
        default_factory=lambda: ["wo", "ah"], min_length=1)
    quick_models: bool = Field(default=True, description="the small models of `exfm reproduce "
                                                         "--quick` (False: models: as set)")
    tables: list[Literal["per_domain", "per_task", "freshness"]] = Field(
        default_factory=list,
        description="`exfm reproduce`'s other tables, run by the `tables` stage (the main table, "
                    "the vm@ matrix, always runs)")
    tune: bool = Field(default=False, description="let AH/AH+SA arms tune GS/LS/LW themselves "
                                                  "(False: distillation.gs/ls/lw as set, so a "
                                                  "`dvc exp run -S distillation.gs=...` sweep "
                                                  "means what it says)")

    @model_validator(mode="after")
    def _folder(self) -> "OfflineConfig":
        if self.source == "folder" and not self.folder:
            raise ValueError("offline.folder: required when offline.source is 'folder'")
        return self

"""When the daily DAG runs (``schedule`` in ``params.yaml``): its first and last day, and how long
a day without data is waited for."""

from __future__ import annotations

from pydantic import Field, field_validator

from exfm.config.base import StrictModel

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


class ScheduleConfig(StrictModel):
    """``exfm_daily``'s calendar. ``start_date: null`` = the data's first day (the first day folder
    under ``data.dir``, else ``data.generator.start_date``); ``end_date: null`` = open-ended, except
    for generated data (its last generated day), so unpausing never schedules days without data."""

    start_date: str | None = Field(None, pattern=DATE_PATTERN,
                                   description="the DAG's first logical day (YYYY-MM-DD)")
    end_date: str | None = Field(None, pattern=DATE_PATTERN,
                                 description="the DAG's last logical day (YYYY-MM-DD)")
    data_wait_s: int = Field(
        3600, ge=0, description="a day whose data has not arrived is waited for this long "
        "(sensor in reschedule mode: no worker slot held), then fails once")
    poke_s: int = Field(60, ge=5, description="seconds between two looks for a day's data")

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _date_to_str(cls, v):
        return v.isoformat() if hasattr(v, "isoformat") else v

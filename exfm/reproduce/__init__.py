"""The paper's offline protocol (``exfm reproduce``): FM x VM grids, one FM for many VMs,
freshness; plus the Theorem 3.1 calibration check. Pure: no services, no orchestrator."""

from exfm.reproduce.protocol import (ARMS, RESULT_COLUMNS, TABLES, ReproduceOptions,
                                     ReproduceResult, run_protocol)
from exfm.reproduce.report import ordering, summarize, write_report

__all__ = ["ARMS", "RESULT_COLUMNS", "TABLES", "ReproduceOptions", "ReproduceResult",
           "run_protocol", "ordering", "summarize", "write_report"]

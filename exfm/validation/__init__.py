"""Data gates (great-expectations 1.x) on a raw day and on an augmented day.

The plain API the pipeline calls (docs/validation.md, docs/CONTRACTS.md)::

    from exfm.validation import gate_raw, gate_augmented, GateFailed
    res = gate_raw(cfg, day, log=print)        # GateResult: .ok .failures .reason .docs_url
    res.raise_if_failed()                      # GateFailed(res.reason) when it failed

Importing this package is cheap; great-expectations is imported on the first gate run.
"""

from exfm.validation.result import Failure, GateFailed, GateResult

__all__ = ["Failure", "GateFailed", "GateResult", "gate_augmented", "gate_raw"]


def gate_raw(cfg, day, log=print) -> GateResult:
    """Validate the committed raw day ``day``; see :func:`exfm.validation.gates.gate_raw`."""
    from exfm.validation.gates import gate_raw as run

    return run(cfg, day, log=log)


def gate_augmented(cfg, day, log=print) -> GateResult:
    """Validate the committed augmented day ``day``; see
    :func:`exfm.validation.gates.gate_augmented`."""
    from exfm.validation.gates import gate_augmented as run

    return run(cfg, day, log=log)

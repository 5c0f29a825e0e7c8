"""What a data gate returns: :class:`GateResult` (``.ok``, ``.failures``, ``.reason``,
``.docs_url``) and the :class:`GateFailed` a task raises from it.

>>> r = GateResult(gate="raw", day="2026-01-02", ok=False, evaluated=3, failures=[
...     Failure("labels in {0, 1}", "expect_column_values_to_be_in_set", "click",
...             "1 unexpected value(s), e.g. [2]", "values in [0, 1]")])
>>> print(r.reason.splitlines()[0])
raw gate failed for day 2026-01-02: 1 of 3 expectation(s) failed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Failure:
    """One failed expectation: which rule, which GX expectation, which column, observed vs expected."""

    rule: str
    expectation: str
    column: str | None
    observed: str
    expected: str

    def line(self) -> str:
        where = f" on column '{self.column}'" if self.column else ""
        return (f"{self.rule}: {self.expectation}{where}: observed {self.observed}, "
                f"expected {self.expected}")


@dataclass
class GateResult:
    """The outcome of one gate on one day (``gate`` is ``raw`` or ``augmented``)."""

    gate: str
    day: str
    ok: bool
    evaluated: int = 0
    failures: list[Failure] = field(default_factory=list)
    docs_url: str | None = None
    local_docs: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """One readable paragraph: verdict, each failed rule, where the Data Docs page is."""
        if self.ok:
            head = (f"{self.gate} gate passed for day {self.day}: all {self.evaluated} "
                    f"expectation(s) met.")
        else:
            head = (f"{self.gate} gate failed for day {self.day}: {len(self.failures)} of "
                    f"{self.evaluated} expectation(s) failed.")
        body = "".join(f"\n  - {f.line()}" for f in self.failures)
        docs = ""
        if self.docs_url:
            docs = f"\n  Data Docs: {self.docs_url}"
            if self.local_docs and self.local_docs != self.docs_url:
                docs += f" (local copy: {self.local_docs})"
        return head + body + docs

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["reason"] = self.reason
        return d

    def raise_if_failed(self) -> "GateResult":
        if not self.ok:
            raise GateFailed(self)
        return self


class GateFailed(RuntimeError):
    """A gate failed; ``str()`` is the result's reason, ``.result`` the :class:`GateResult`."""

    def __init__(self, result: GateResult):
        self.result = result
        super().__init__(result.reason)

"""``exfm promote`` / ``rollback`` / ``gate`` refuse bad input in one line before any service is
contacted (the registry side is tested in tests/integration/test_promotion.py)."""

from __future__ import annotations

import pytest

from exfm.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["rollback", "--vm", "nope", "--reason", "x"], "no VM named 'nope'"),
    (["promote", "--vm", "d0-click", "--version", "3"], "Missing option '--reason'"),
    (["gate", "--vm", "d0-click", "--day", "2026-02-30"], "is not a calendar date"),
])
def test_bad_input_is_one_line(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_commands_are_listed(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in ("promote", "rollback", "gate"))

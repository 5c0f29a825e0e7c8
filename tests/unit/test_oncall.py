"""On-call alerts: one readable message (DAG, task, day, try, the error's last lines, links) that
reaches a real HTTP server on 127.0.0.1 as JSON; a webhook that is down is logged, not raised,
and its URL's path (often a token) never appears in the log; FM blessing's pure verdict."""

from __future__ import annotations

import pytest

from exfm.config.promotion import FMBlessingConfig
from exfm.das.blessing import judge_fm
from exfm.oncall import WEBHOOK_ENV, build_alert, format_alert, notify, webhook_url
from tests.webhook import webhook_server


@pytest.fixture
def webhook():
    with webhook_server() as hook:
        yield f"{hook.url}/hooks/SECRET-TOKEN", hook.posts


def _raise():
    def inner():
        raise ValueError("gate_raw 2026-01-03: label rate of click 0.000 below 0.001")
    try:
        inner()
    except ValueError as e:
        return e


def test_alert_is_readable_and_keeps_the_last_lines():
    a = build_alert("exfm_daily", "train_vm", "2026-01-03", 2, _raise(),
                    log_url="http://127.0.0.1:8080/dags/exfm_daily/runs/r/tasks/train_vm/mapped/1",
                    mlflow_url="http://127.0.0.1:5000/#/runs/abc", max_lines=3, map_index=1)
    text = format_alert(a)
    first = text.splitlines()[0]
    assert first == ("[exfm] FAILED exfm_daily.train_vm[1] day 2026-01-03 (try 2): ValueError: "
                     "gate_raw 2026-01-03: label rate of click 0.000 below 0.001")
    assert len(a.error_lines) == 3 and a.error_lines[-1].startswith("ValueError: gate_raw")
    assert "Airflow log: http://127.0.0.1:8080/dags/" in text and "MLflow run: " in text
    s = build_alert("d", "t", None, None, "line1\nRuntimeError: boom")
    assert s.reason == "RuntimeError: boom" and s.map_index is None


def test_alert_reaches_a_local_webhook(webhook):
    url, got = webhook
    a = build_alert("exfm_daily", "gate_raw", "2026-01-03", 1, _raise())
    logs = []
    assert notify(a, url, log=logs.append) is True
    [(path, ctype, body)] = got
    assert path == "/hooks/SECRET-TOKEN" and ctype == "application/json"
    assert "label rate of click" in body["alert"]["reason"] and body["alert"]["day"] == "2026-01-03"
    assert body["text"].startswith("[exfm] FAILED exfm_daily.gate_raw")
    assert logs and logs[0].startswith("[exfm] FAILED")


def test_a_dead_webhook_is_logged_without_its_path(monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    logs = []
    a = build_alert("d", "t", "2026-01-01", 1, "RuntimeError: x")
    assert notify(a, f"http://127.0.0.1:{port}/hooks/SECRET", timeout_s=2, log=logs.append) is False
    assert f"127.0.0.1:{port}" in logs[-1] and "SECRET" not in logs[-1]
    monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:1/env")
    assert webhook_url("http://configured") == "http://127.0.0.1:1/env"
    monkeypatch.delenv(WEBHOOK_ENV)
    assert webhook_url(None) is None


def test_judge_fm_collapse_and_margin():
    fb = FMBlessingConfig(max_abs_worsening=0.01)
    y = [0, 1] * 50
    good = [0.2, 0.8] * 50
    assert judge_fm(fb, y, good).blessed is True  # first snapshot, not collapsed
    tiny = [0.001, 0.002] * 50  # mean 0.0015 / rate 0.5: collapsed towards 0
    b = judge_fm(fb, y, tiny, good)
    assert b.blessed is False and "outside [0.2, 5.0]" in b.reason
    worse = judge_fm(fb, y, [0.4, 0.6] * 50, good)
    assert worse.blessed is False and "vs serving" in worse.reason and worse.serving < worse.candidate
    assert judge_fm(fb, y, good, [0.4, 0.6] * 50).blessed is True


def test_deadline_callback_posts_one_alert(webhook):
    import asyncio

    from exfm.oncall import deadline_missed

    url, got = webhook
    ctx = {"dag_run": {"dag_id": "exfm_daily", "run_id": "scheduled__2026-01-03",
                       "logical_date": "2026-01-03T00:00:00+00:00"}}
    assert asyncio.run(deadline_missed(ctx, minutes=240, webhook=url)) is True
    [(_path, _ctype, body)] = got
    assert body["alert"]["day"] == "2026-01-03" and "240 min" in body["alert"]["reason"]
    assert body["alert"]["extra"]["run_id"] == "scheduled__2026-01-03"


def test_a_fail_without_retry_alert_names_the_gates_own_reason():
    from exfm.oncall import build_alert

    class AirflowFailException(Exception):  # the name Airflow's "fail, no retry" carries
        pass

    class GateFailed(RuntimeError):
        pass

    try:
        try:
            raise GateFailed("raw gate failed for day 2026-01-03: label rate of click 0.0")
        except GateFailed as e:
            raise AirflowFailException(str(e)) from e
    except AirflowFailException as wrapped:
        a = build_alert("exfm_daily", "gate_raw", "2026-01-03", 1, wrapped)
    assert a.reason == "GateFailed: raw gate failed for day 2026-01-03: label rate of click 0.0"


def test_a_format_violation_alert_names_the_violation_in_its_one_line_reason(tmp_path):
    """`land` refusing a day: the error's first line only counts the violations; the reason goes
    on with the first of them (file, column, rule), the lines keep them all."""
    import pyarrow as pa

    from exfm.data.io import write_day
    from exfm.data.schema import DatasetError, DatasetSchema
    from exfm.data.validate import validate_dataset

    DatasetSchema(name="t", timestamp="ts", labels=["click"]).write(tmp_path)
    write_day(tmp_path, "2026-01-03", pa.table({"ts": pa.array([1767398400, 1767398401]),
                                                "click": pa.array([0, 2])}))
    with pytest.raises(DatasetError) as ei:
        validate_dataset(tmp_path)
    a = build_alert("exfm_daily", "land", "2026-01-03", 1, ei.value)
    assert a.reason.startswith("DatasetErrors: ") and "1 format violation(s):" in a.reason
    assert "day=2026-01-03" in a.reason and "column 'click': label must be 0 or 1" in a.reason
    assert any("label must be 0 or 1" in ln for ln in a.error_lines)


def test_mlflow_links_open_the_runs_view():
    """MLflow 3.17's UI opens on its GenAI view unless the URL asks for model training."""
    from exfm.oncall import mlflow_run_url

    assert mlflow_run_url("http://127.0.0.1:5000/", "r1", "4") == \
        "http://127.0.0.1:5000/#/experiments/4/runs/r1?workflowType=machine_learning"
    assert mlflow_run_url("http://m:5000", "r1") == "http://m:5000/#/runs/r1?workflowType=machine_learning"

"""What on-call sees when a day goes wrong, through the real scheduler (SeaweedFS, MLflow, Ray,
Airflow), with a local webhook (``http.server`` on 127.0.0.1) as the on-call endpoint:

- a frozen FM (``fm.every_days`` 10: it trains on day 1 only): day 3 (run after day 1) skips
  ``train_fm`` and says why, its DAS serves the FM of day 1 (gap 2), which is above
  ``freshness.max_gap_days`` 1: the freshness alert reaches the webhook and, under policy
  ``degraded``, the VM trains without FM and is tagged ``degraded=true``;
- the pools and the asset events of those days: Ray-bound tasks in ``exfm_ray`` (sized from the
  Ray head's CPUs), ``train_fm`` in the one-slot ``exfm_fm_chain``; one event per committed
  partition and snapshot with ``{day, uri, rows, digest, mlflow_run_id}`` (none for day 1's
  augmented partition, which DAS skipped: no FM before it);
- the daily run's DeadlineAlert (``deadline.minutes`` 1 after the run's logical date, so day 1's
  deadline has passed when its run is created, however fast the machine runs the day): the
  scheduler finds it missed while the run is running, and the triggerer's callback posts the
  "deadline missed" alert to the webhook (the ``queued_at`` default's wiring is checked by
  ``tests/dags/test_dagbag.py``);
- a failing gate: day 2's data broken as ``exfm demo --break-day`` breaks it (a label all 0): its
  raw gate fails once (no retry), nothing downstream runs, the notifier's alert reaches the
  webhook with the gate's reason, and the champion, the FM versions and the FM lease are untouched;
- a day that breaks the format (day 4: a label value 2): ``land`` fails once (no retry: the file
  will not change), the alert names the file, the column and the rule, nothing is committed;
  then the file is fixed and ``exfm retry-day`` clears the failed tasks: day 4 lands and succeeds.

Lean on purpose (300 rows a day, one VM, two full days and one that stops at its gate): the same
generated days as tests/integration/test_scheduler.py, whose helpers it reuses.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from exfm import pipeline
from tests.integration.test_scheduler import (SETS, VM, _airflow, _api, _backfill, _tis,
                                              _wait_runs)
from tests.webhook import webhook_server

pytestmark = pytest.mark.integration

D1, D2, D3 = "2026-01-01", "2026-01-02", "2026-01-03"


_HOOK: list = []  # the module stack's webhook (tests.webhook.Webhook), set by `failing`


def _alerts(task_id: str, day: str) -> list[dict]:
    return [b for b in _HOOK[0].bodies
            if b["alert"]["task_id"] == task_id and b["alert"]["day"] == day]


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    from tests.integration.conftest import _start, make_test_config, stack_env

    from exfm.stack import stack_down
    from exfm.stack.services import airflow_shell_env

    hooks = contextlib.ExitStack()
    hook = hooks.enter_context(webhook_server())
    _HOOK[:] = [hook]
    tmp = tmp_path_factory.mktemp("failures")
    cfg = make_test_config(tmp, f"data.dir={tmp / 'data'}", *SETS, "fm.every_days=10",
                           "freshness.max_gap_days=1", "freshness.policy=degraded",
                           "deadline.minutes=1", "deadline.reference=logical_date",
                           "schedule.end_date=2026-01-04",  # day 4: written by the test
                           f"oncall.webhook_url={hook.url}/hook")
    pipeline.data_dir(cfg)
    _start(cfg, ["s3", "mlflow", "ray", "airflow"])
    try:
        with stack_env(cfg):
            env = airflow_shell_env(cfg)
            deadline = time.monotonic() + 180
            while True:
                p = _airflow_ok(env, "dags", "unpause", "exfm_daily")
                if p:
                    break
                assert time.monotonic() < deadline, "exfm_daily was never parsed"
                time.sleep(5)
            yield cfg, env
    finally:
        stack_down(cfg, log=print)
        hooks.close()


def _airflow_ok(env, *args) -> bool:
    import subprocess

    return subprocess.run(["airflow", *args], env=env, capture_output=True,
                          timeout=120).returncode == 0


def _events(cfg, asset: str) -> list[dict]:
    out = _api(cfg, "/assets/events?limit=100&source_dag_id=exfm_daily")["asset_events"]
    return [e for e in out if e["name"] == asset]


def test_frozen_fm_alerts_and_degrades_then_a_broken_day_stops_at_its_gate(failing):
    import mlflow

    from exfm.commands.demo import break_day
    from exfm.das.store import lease_store
    from exfm.registry.mlflow_registry import (connect, experiment_name, fm_model_name,
                                               vm_model_name)
    from exfm.storage.partitions import PartitionStore

    cfg, env = failing
    client = connect(cfg)

    # -- day 1, then day 3: the FM trains on day 1 only (fm.every_days 10) ---------------------
    _backfill(env, D1)
    assert _wait_runs(cfg, [D1], timeout_s=900)[D1]["state"] == "success"
    _backfill(env, D3)
    run3 = _wait_runs(cfg, [D3], timeout_s=900)[D3]
    assert run3["state"] == "success"
    tis3 = {t["task_id"]: t for t in _tis(cfg, run3["dag_run_id"])}
    assert tis3["train_fm"]["state"] == "skipped"
    log = json.dumps(_api(cfg, f"/dags/exfm_daily/dagRuns/{run3['dag_run_id']}/taskInstances/"
                               "train_fm/logs/1?full_content=true"))
    assert "fm.every_days 10" in log and "next FM day 2026-01-11" in log, log[-2000:]
    [fm1] = client.search_model_versions(f"name='{fm_model_name(cfg)}'")
    assert fm1.tags["day"] == D1
    m3 = PartitionStore(cfg, "augmented").manifest(D3)
    assert m3.fm_version == fm1.version  # DAS keeps the newest snapshot before the day

    # the freshness gap (2 > max_gap_days 1): the alert, and the VM trained without FM
    [stale] = _alerts("report", D3)
    assert "FMStale: freshness gap 2 day(s) > freshness.max_gap_days 1" in stale["alert"]["reason"]
    assert f"{VM} (degraded)" in stale["alert"]["reason"]
    exp = mlflow.get_experiment_by_name(experiment_name(cfg, "vm"))
    [fm_arm] = mlflow.search_runs([exp.experiment_id], f"tags.day = '{D3}' and tags.arm = 'fm'",
                                  output_format="list")
    assert fm_arm.data.tags["degraded"] == "true" and fm_arm.data.tags["freshness"] == "degraded"
    assert fm_arm.data.metrics["fm/freshness_gap_days"] == 2
    vm3 = [v for v in client.search_model_versions(f"name='{vm_model_name(VM)}'")
           if v.tags["day"] == D3]
    assert [v.tags.get("degraded") for v in vm3] == ["true"]
    assert vm3[0].tags["mode"] == "none"  # no FM supervision

    # pools: the Ray-bound tasks share exfm_ray (the head's 4 CPUs), train_fm has its own slot
    pools = {p["name"]: p["slots"] for p in _api(cfg, "/pools")["pools"]}
    assert pools["exfm_ray"] == 4 and pools["exfm_fm_chain"] == 1
    all3 = _tis(cfg, run3["dag_run_id"])
    assert {t["pool"] for t in all3 if t["task_id"] in ("augment", "train_vm")} == {"exfm_ray"}
    assert tis3["train_fm"]["pool"] == "exfm_fm_chain" and tis3["land"]["pool"] == "default_pool"

    # asset events: what each day produced, with its URI, rows, digest and MLflow run
    raw = {e["extra"]["day"]: e["extra"] for e in _events(cfg, "exfm_raw")}
    assert sorted(raw) == [D1, D3]
    assert raw[D3]["digest"] == PartitionStore(cfg, "raw").manifest(D3).digest
    assert raw[D3]["uri"].rstrip("/").endswith(f"raw/day={D3}") and raw[D3]["rows"] > 0
    aug = {e["extra"]["day"]: e["extra"] for e in _events(cfg, "exfm_augmented")}
    assert sorted(aug) == [D3]  # day 1's DAS was skipped: no FM before it, no event
    assert aug[D3]["digest"] == m3.digest and aug[D3]["fm_version"] == fm1.version
    assert aug[D3]["mlflow_run_id"] and aug[D3]["rows"] == m3.rows
    fm_ev = [e["extra"] for e in _events(cfg, "exfm_fm")]
    assert [(e["day"], e["version"], e["mlflow_run_id"]) for e in fm_ev] == [
        (D1, fm1.version, fm1.tags["run_id"])]
    assert fm_ev[0]["uri"] == f"models:/{fm_model_name(cfg)}/{fm1.version}"
    vm_ev = {e["extra"]["day"]: e["extra"] for e in _events(cfg, "exfm_vm")}
    assert sorted(vm_ev) == [D1, D3] and vm_ev[D3]["vm"] == VM
    assert vm_ev[D3]["uri"] == f"models:/{vm_model_name(VM)}/{vm3[0].version}"
    assert vm_ev[D3]["digest"] == m3.digest

    # day 3's promote judged day 1's VM: the first champion
    champion = client.get_model_version_by_alias(vm_model_name(VM), "champion")
    lease = lease_store(cfg).get(fm_model_name(cfg))
    lease_before = (lease.version, lease.generation) if lease else None
    fm_before = {v.version for v in client.search_model_versions(f"name='{fm_model_name(cfg)}'")}

    # the deadline (1 min after day 1's logical date): the triggerer's alert reached the webhook
    missed = _alerts("(dag run)", D1)
    assert missed and missed[0]["alert"]["reason"] == (
        "DeadlineMissed: the daily run is not done 1 min after its logical date"), _HOOK[0].bodies

    # -- day 2 broken (as `exfm demo --break-day 2` breaks it): the raw gate stops the day -----
    assert "label set to 0" in break_day(cfg.data.dir, D2)
    _backfill(env, D2)
    run2 = _wait_runs(cfg, [D2], timeout_s=600)[D2]
    assert run2["state"] == "failed"
    tis2 = {t["task_id"]: t for t in _tis(cfg, run2["dag_run_id"])}
    assert tis2["land"]["state"] == "success"  # the format is fine: only the gate refuses it
    assert tis2["gate_raw"]["state"] == "failed" and tis2["gate_raw"]["try_number"] == 1
    after_gate = ("bless_fm", "train_fm", "augment", "gate_augmented", "vm_names", "train_vm",
                  "promote", "report")
    assert {k: tis2[k]["state"] for k in after_gate} == {k: "upstream_failed" for k in after_gate}
    assert all(tis2[k]["try_number"] == 0 for k in after_gate)  # never scheduled, never tried

    [alert] = _alerts("gate_raw", D2)  # one alert: a refused gate is not retried
    a = alert["alert"]
    assert (a["dag_id"], a["try_number"]) == ("exfm_daily", 1)
    assert a["reason"].startswith(f"GateFailed: raw gate failed for day {D2}")
    assert "label rate within configured bounds" in alert["text"]
    assert a["log_url"] and "gate_raw" in a["log_url"]

    # nothing moved: the champion, the FM versions, the lease; no VM version of day 2
    assert client.get_model_version_by_alias(vm_model_name(VM), "champion").version == \
        champion.version
    assert {v.version for v in client.search_model_versions(
        f"name='{fm_model_name(cfg)}'")} == fm_before
    lease = lease_store(cfg).get(fm_model_name(cfg))
    assert ((lease.version, lease.generation) if lease else None) == lease_before
    assert not [v for v in client.search_model_versions(f"name='{vm_model_name(VM)}'")
                if v.tags["day"] == D2]
    assert PartitionStore(cfg, "augmented").manifest(D2) is None

    # -- day 4 breaks the format (label value 2): land refuses it once, commits nothing ---------
    import pyarrow as pa
    import pyarrow.compute as pc

    from exfm.data.io import read_day, write_day
    from exfm.data.schema import load_schema

    D4 = "2026-01-04"  # day 3's rows a day later, new request ids, three labels set to 2
    schema = load_schema(cfg.data.dir)
    t = read_day(cfg.data.dir, D3)
    for col, shift in ((schema.timestamp, 86400), (schema.request_id, 10**7)):
        i = t.schema.get_field_index(col)
        t = t.set_column(i, col, pc.add(t.column(col), pa.scalar(shift, t.schema.field(i).type)))
    label = schema.labels[0]
    vals = t.column(label).to_numpy().copy()
    vals[:3] = 2
    i = t.schema.get_field_index(label)
    write_day(cfg.data.dir, D4, t.set_column(i, label, pa.array(vals, t.schema.field(i).type)))
    _backfill(env, D4)
    run4 = _wait_runs(cfg, [D4], timeout_s=600)[D4]
    assert run4["state"] == "failed"
    tis4 = {t["task_id"]: t for t in _tis(cfg, run4["dag_run_id"])}
    assert tis4["land"]["state"] == "failed" and tis4["land"]["try_number"] == 1
    [alert] = _alerts("land", D4)  # one alert: a format violation is not retried
    reason = alert["alert"]["reason"]  # the one line a pager shows: the violation itself
    assert reason.startswith("DatasetErrors:") and "label must be 0 or 1" in reason, reason
    assert f"day={D4}" in alert["text"] and f"column '{label}'" in alert["text"]
    assert "label must be 0 or 1: 3 value(s) are not" in alert["text"], alert["text"]
    assert PartitionStore(cfg, "raw").manifest(D4) is None

    # -- on call fixes day 4 and retries it: only what failed runs again, and the day lands ------
    from exfm.commands.retry import retry_day

    write_day(cfg.data.dir, D4, t)  # day 3's rows a day later, labels as they were
    said: list[str] = []
    since = time.time()
    done = retry_day(cfg, D4, log=said.append)
    assert done["how"] == "cleared" and done["run_id"] == run4["dag_run_id"], said
    assert "land" in done["tasks"] and "train_fm" in done["tasks"], done
    run4 = _wait_runs(cfg, [D4], timeout_s=900, since=since)[D4]
    assert run4["state"] == "success", run4
    tis4 = {t["task_id"]: t for t in _tis(cfg, run4["dag_run_id"])}
    assert tis4["land"]["try_number"] == 2 and tis4["wait_for_data"]["try_number"] == 1
    assert PartitionStore(cfg, "raw").manifest(D4).rows == t.num_rows
    with pytest.raises(Exception, match="is success, not failed"):
        retry_day(cfg, D4, log=said.append)

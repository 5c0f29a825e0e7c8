"""Scheduler-driven days through a real stack (SeaweedFS, MLflow, Ray, Airflow's scheduler):

- a 3-day ``airflow backfill create --max-active-runs 3`` runs the days one after another (task
  start times), the FM chains day by day (each version warm-started from the previous day's),
  each day's DAS infers with the previous day's snapshot (freshness gap 1);
- ``airflow tasks clear`` of day 2 after day 3 re-runs it with the same FM snapshot and the same
  augmented digest; the newest versions are still day 3's; a new version of day 2 supersedes
  the old one (tagged ``superseded_by``);
- each day is gated (raw gate; augmented gate from day 2, skipped on day 1 without an FM),
  promoted and reported: one ``report/<day>`` run per day in ``exfm-pipeline`` with the gates'
  Data Docs links, and day 2's promote makes day 1's VM the first ``@champion``;
- MLflow unreachable during ``augment``: the step raises (never "no FM") and nothing is committed;
- a day's run deleted and the day triggered by its date (``airflow dags trigger --logical-date``,
  the README's command and docs/oncall.md's way past a failed run Airflow 3.3 cannot clear) runs
  that day, although Airflow gives a triggered run the data interval of the trigger's own time.

One stack for the module (tiny data: 300 rows a day, one VM with a control arm, a small FM).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from exfm import pipeline

pytestmark = pytest.mark.integration

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
D1, D2, D3 = DAYS
VM = "t-d0"
SETS = ("data.source=generate", "data.generator.days=3", "data.generator.rows_per_day=300",
        "data.generator.seed=7", "models.fm_hidden=[64,32]", "models.fm_embed_dim=16",
        f"vms=[{{name: {VM}, model: fam, task: click, domain: d0, control: true}}]",
        "schedule.data_wait_s=120", "schedule.poke_s=5", "ray.checkpoints_per_day=1",
        "das.max_actors=1",
        # tiny days (about 110 rows of the VM's slice, ~4 positives): let the promotion gate decide
        # on them at all (library default min_rows 200) and judge only the alias move, not quality
        "promotion.min_rows=50", "promotion.calibration_band=[0.05,20]",
        "promotion.vs_control=false",
        # a small FM on ~300 rows a day moves its mean prediction of the rare `like` label by
        # more than the default x[0.5, 2] day to day (measured: 0.0225 -> 0.0074 on day 3)
        "validation.fm_pred_mean_band=[0.1,10]")


def _airflow(env, *args, timeout=180) -> str:
    proc = subprocess.run(["airflow", *args], env=env, text=True, capture_output=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"airflow {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def _backfill(env, day: str, to_day: str | None = None, *args: str, timeout_s: float = 180) -> None:
    """``airflow backfill create`` of ``day`` .. ``to_day``, retried while Airflow answers that a
    backfill is still running (it allows one per DAG, and completes it a scheduler loop after its
    last run ended) or that its SQLite is locked (the scheduler starting up writes too; a lock it
    holds across a read snapshot fails a writer at once, whatever the busy timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        p = subprocess.run(["airflow", "backfill", "create", "--dag-id", "exfm_daily",
                            "--from-date", day, "--to-date", to_day or day,
                            "--reprocess-behavior", "failed", *args],
                           env=env, text=True, capture_output=True, timeout=180)
        out = p.stdout + p.stderr
        if p.returncode == 0:
            return
        assert "AlreadyRunningBackfill" in out or "database is locked" in out, out[-3000:]
        assert time.monotonic() < deadline, out[-3000:]
        time.sleep(5)


def _api(cfg, path: str):
    from exfm.stack.services import airflow_token, airflow_url

    req = urllib.request.Request(airflow_url(cfg) + "/api/v2" + path,
                                 headers={"Authorization": f"Bearer {airflow_token(cfg)}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _wait_runs(cfg, days: list[str], timeout_s: float, since: float = 0.0) -> dict:
    """Wait until the runs of ``days`` are all terminal; returns {day: run}."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = _api(cfg, "/dags/exfm_daily/dagRuns?limit=100")["dag_runs"]
        by_day = {r["logical_date"][:10]: r for r in runs}
        mine = {d: by_day.get(d) for d in days}
        if all(r and r["state"] in ("success", "failed") for r in mine.values()):
            ends = [r["end_date"] for r in mine.values()]
            if not since or all(e and _ts(e) > since for e in ends):
                return mine
        if time.monotonic() > deadline:
            pytest.fail(f"runs not finished after {timeout_s:.0f}s: "
                        f"{ {d: r and r['state'] for d, r in mine.items()} }")
        time.sleep(5)


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _tis(cfg, run_id: str) -> list[dict]:
    return _api(cfg, f"/dags/exfm_daily/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    from tests.integration.conftest import _start, make_test_config, stack_env

    from exfm.stack import stack_down
    from exfm.stack.services import airflow_shell_env

    tmp = tmp_path_factory.mktemp("sched")
    cfg = make_test_config(tmp, f"data.dir={tmp / 'data'}", *SETS)
    pipeline.data_dir(cfg)  # the days exist before the DAG's calendar is read
    _start(cfg, ["s3", "mlflow", "ray", "airflow"])
    try:
        with stack_env(cfg):
            env = airflow_shell_env(cfg)
            deadline = time.monotonic() + 180
            while True:  # the dag processor parses the DAG file, then it can be unpaused
                p = subprocess.run(["airflow", "dags", "unpause", "exfm_daily"], env=env,
                                   text=True, capture_output=True, timeout=120)
                if p.returncode == 0:
                    break
                assert time.monotonic() < deadline, p.stdout[-2000:] + p.stderr[-2000:]
                time.sleep(5)
            yield cfg, env
    finally:
        stack_down(cfg, log=print)


def test_backfill_runs_days_in_order_and_chains_the_fm(sched):
    from exfm.registry.mlflow_registry import connect, fm_model_name, vm_model_name
    from exfm.storage.partitions import PartitionStore

    cfg, env = sched
    _backfill(env, D1, D3, "--max-active-runs", "3")
    runs = _wait_runs(cfg, DAYS, timeout_s=1500)
    assert {d: r["state"] for d, r in runs.items()} == {d: "success" for d in DAYS}

    # one after the other: day d+1's work (land onwards; its data sensor may look earlier) starts
    # after day d's FM and DAS ended, and each task after the same task of day d
    tis = {d: {(t["task_id"], t.get("map_index", -1)): t for t in _tis(cfg, r["dag_run_id"])}
           for d, r in runs.items()}
    for a, b in zip(DAYS, DAYS[1:]):
        fm_das_end = max(_ts(tis[a][(k, -1)]["end_date"]) for k in ("train_fm", "augment"))
        assert _ts(tis[b][("land", -1)]["start_date"]) >= fm_das_end - 1, \
            f"{b} landed before {a}'s FM/DAS finished"
        for key, t in tis[b].items():
            if key in tis[a] and t["start_date"]:
                assert _ts(t["start_date"]) >= _ts(tis[a][key]["end_date"]) - 1, \
                    f"{key} of {b} started before {key} of {a} ended"

    # the FM chains day by day: version of day d warm-started from the version of day d-1
    client = connect(cfg)
    fm = {v.tags["day"]: v for v in client.search_model_versions(f"name='{fm_model_name(cfg)}'")}
    assert sorted(fm) == DAYS
    assert fm[D1].tags["warm_start"] == "none"
    assert fm[D2].tags["warm_start"] == fm[D1].version
    assert fm[D3].tags["warm_start"] == fm[D2].version
    assert int(fm[D1].version) < int(fm[D2].version) < int(fm[D3].version)

    # each day's DAS used the previous day's snapshot (gap 1); day 1 had none (said in MLflow)
    aug = PartitionStore(cfg, "augmented")
    assert aug.manifest(D1) is None
    for prev, d in ((D1, D2), (D2, D3)):
        m = aug.manifest(d)
        assert m.fm_version == fm[prev].version and m.extra["fm_choice"] in ("lease", "pinned")
    import mlflow

    exp = mlflow.get_experiment_by_name(f"{cfg.tracking.experiment_prefix}-das")
    das = {r.data.tags["day"]: r for r in mlflow.search_runs(
        [exp.experiment_id], output_format="list")}
    assert das[D1].data.tags["status"] == "skipped_no_fm"
    assert das[D3].data.metrics["das/freshness_gap_days"] == 1
    vm = {v.tags["day"]: v for v in client.search_model_versions(f"name='{vm_model_name(VM)}'")}
    assert vm[D3].tags["fm_version"] == fm[D2].version

    # gated, promoted, reported: one report run per day (links to the gates' Data Docs); day 2's
    # promote judged day 1's VM version on day 2's slice and made it the first @champion
    rep = mlflow.get_experiment_by_name(f"{cfg.tracking.experiment_prefix}-pipeline")
    reports = {r.data.tags["day"]: r for r in mlflow.search_runs(
        [rep.experiment_id], "tags.component = 'report'", output_format="list")}
    assert sorted(reports) == DAYS
    from urllib.parse import urlsplit

    def page(link: str) -> bool:  # a Data Docs page (presigned: the query carries the signature)
        return urlsplit(link).path.endswith(".html")

    for d, r in reports.items():
        assert r.info.run_name == f"report/{d}"
        assert page(r.data.tags["link.raw gate"])
    assert "link.augmented gate" not in reports[D1].data.tags  # skipped: no FM before day 1
    assert page(reports[D2].data.tags["link.augmented gate"])
    from exfm.promotion.decision import Decision

    name = vm_model_name(VM)
    first = Decision.from_tags(client.get_model_version(name, vm[D1].version).tags)
    assert (first.day, first.decision, first.champion_version) == (D2, "promoted", None), first
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version in (vm[D1].version, vm[D2].version)  # day 3's promote may move it

    # a task's log is readable through the API (what the UI shows)
    log = _api(cfg, f"/dags/exfm_daily/dagRuns/{runs[D2]['dag_run_id']}/taskInstances/"
                    "augment/logs/1?full_content=true")
    text = json.dumps(log)
    assert "DAS" in text and len(text) > 200, text[:500]


def test_cleared_day_replays_with_the_same_snapshot(sched):
    from exfm.compute.submit import job_client
    from exfm.registry.mlflow_registry import (connect, fm_model_name, latest_version,
                                               vm_model_name)
    from exfm.storage.partitions import PartitionStore

    cfg, env = sched
    aug = PartitionStore(cfg, "augmented")
    before = aug.manifest(D2)
    client = connect(cfg)
    fm_before = {v.version for v in client.search_model_versions(f"name='{fm_model_name(cfg)}'")}
    name = vm_model_name(VM)
    (old,) = [v.version for v in client.search_model_versions(f"name='{name}'")
              if v.tags["day"] == D2]
    t0 = time.time()
    _airflow(env, "tasks", "clear", "exfm_daily", "--start-date", D2, "--end-date",
             f"{D2}T23:59:59", "--yes")
    run = _wait_runs(cfg, [D2], timeout_s=900, since=t0)[D2]
    assert run["state"] == "success"
    # the clear ran the day's Ray jobs again (ids with the run's clear number), not the old
    # jobs' results handed back
    again = [j.submission_id for j in job_client(cfg).list_jobs()
             if j.submission_id and f"{D2}T00-00-00-00-00_c1_" in j.submission_id]
    assert {i.split("_c1_")[1] for i in again} >= {"train_fm", "augment", f"train_vm_{VM}"}, again
    after = aug.manifest(D2)
    assert after.write_id != before.write_id  # DAS committed the day again...
    assert after.digest == before.digest  # ...with the same rows and FM snapshot: same content
    assert after.fm_version == before.fm_version
    # the re-run found its FM run registered (same data, same warm start): no new FM version
    fm_after = {v.version for v in client.search_model_versions(f"name='{fm_model_name(cfg)}'")}
    assert fm_after == fm_before
    # nor a new VM version: the VM run found its version on this data registered
    assert [v.version for v in client.search_model_versions(f"name='{name}'")
            if v.tags["day"] == D2] == [old]


def test_cleared_day_with_corrected_data_retrains_and_supersedes(sched):
    """Day 2's logs are corrected after it ran (here: its last 40 rows dropped) and the day is
    cleared: land re-uploads it, and every step runs on the new rows. Handing back the jobs of
    the first run (same Ray job ids) would leave augmented/day=2 built from the old rows."""
    from exfm.data.io import read_day, write_day
    from exfm.registry.mlflow_registry import (connect, fm_model_name, latest_version,
                                               vm_model_name)
    from exfm.storage.partitions import PartitionStore

    cfg, env = sched
    client = connect(cfg)
    raw, aug = PartitionStore(cfg, "raw"), PartitionStore(cfg, "augmented")
    raw_before, aug_before = raw.manifest(D2), aug.manifest(D2)
    fm, vm = fm_model_name(cfg), vm_model_name(VM)

    def versions_of_d2(name):
        return sorted((v.version for v in client.search_model_versions(f"name='{name}'")
                       if v.tags["day"] == D2), key=int)

    (fm_old,), (vm_old,) = versions_of_d2(fm), versions_of_d2(vm)
    table = read_day(cfg.data.dir, D2)
    write_day(cfg.data.dir, D2, table.slice(0, table.num_rows - 40))
    t0 = time.time()
    _airflow(env, "tasks", "clear", "exfm_daily", "--start-date", D2, "--end-date",
             f"{D2}T23:59:59", "--yes")
    run = _wait_runs(cfg, [D2], timeout_s=900, since=t0)[D2]
    assert run["state"] == "success"
    raw_after, aug_after = raw.manifest(D2), aug.manifest(D2)
    assert raw_after.rows == raw_before.rows - 40 and raw_after.digest != raw_before.digest
    # DAS read the corrected day, with the same snapshot (FM trained on day 1)
    assert aug_after.rows == raw_after.rows and aug_after.digest != aug_before.digest
    assert aug_after.extra["source_digest"] == raw_after.digest
    assert aug_after.fm_version == aug_before.fm_version
    for name, old in ((fm, fm_old), (vm, vm_old)):  # FM and VM trained again on the new rows
        new = [v for v in versions_of_d2(name) if v != old]
        assert len(new) == 1, (name, versions_of_d2(name))
        assert client.get_model_version(name, old).tags["superseded_by"] == new[0]
        assert latest_version(cfg, name, before_day=D3) == new[0]
        assert client.get_model_version(name, latest_version(cfg, name)).tags["day"] == D3


def test_mlflow_down_fails_augment_and_commits_nothing(sched, monkeypatch):
    from exfm.registry.mlflow_registry import RegistryError
    from exfm.storage.partitions import PartitionStore

    cfg, _env = sched
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
        update={"uri": "http://127.0.0.1:9"})})
    aug = PartitionStore(cfg, "augmented")
    before = aug.manifest(D3)
    with pytest.raises(RegistryError, match="127.0.0.1:9"):
        pipeline.augment(dead, D3, log=print)
    assert aug.manifest(D3) == before  # nothing committed


def test_a_day_triggered_by_its_date_runs_that_day(sched):
    from exfm.stack.services import airflow_token, airflow_url

    cfg, env = sched
    old = _wait_runs(cfg, [D3], timeout_s=60)[D3]
    req = urllib.request.Request(
        f"{airflow_url(cfg)}/api/v2/dags/exfm_daily/dagRuns/{old['dag_run_id']}", method="DELETE",
        headers={"Authorization": f"Bearer {airflow_token(cfg)}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204
    _airflow(env, "dags", "trigger", "exfm_daily", "--logical-date", f"{D3}T00:00:00+00:00")
    run = _wait_runs(cfg, [D3], timeout_s=900)[D3]
    assert run["dag_run_id"] != old["dag_run_id"] and run["run_type"] == "manual"
    assert run["state"] == "success"  # before the fix: today's data waited for, then failed
    # what used to pick the day: the trigger's wall-clock time, not D3
    assert not run["data_interval_start"].startswith(D3), run["data_interval_start"]
    log = json.dumps(_api(cfg, f"/dags/exfm_daily/dagRuns/{run['dag_run_id']}/taskInstances/"
                               "land/logs/1?full_content=true"))
    assert f"day={D3}" in log, log[-2000:]

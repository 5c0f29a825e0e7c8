"""The one-day slice through every real part: SeaweedFS, MLflow, Ray (Jobs API, Ray Train, Ray
Data) and Airflow (``airflow dags test`` of ``exfm_daily``), on SQLite and on PostgreSQL.

Day 1 gives the FM its first snapshot (a real Ray job); day 2 is the slice under test: land
raw/day=2, DAS writes the FM's predictions to augmented/day=2, the FM trains on day 2 and
registers v2, and the two mapped VM tasks train on their slices and log their runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from exfm import pipeline
from exfm.config import DataConfig, GeneratorConfig, VMConfig

pytestmark = pytest.mark.integration

D1, D2 = "2026-01-01", "2026-01-02"
VMS = [VMConfig(name="slice-d0", model="deepfam", task="click", domain="d0", control=False),
       VMConfig(name="slice-d1", model="fam", task="click", domain="d1", control=True)]


def _slice_cfg(cfg, tmp_path):
    data = DataConfig(dir=str(tmp_path / "data"), source="generate",
                      generator=GeneratorConfig(days=2, rows_per_day=2000, seed=5))
    # its own bucket: the raw gate compares a day with the trailing days' stats in the bucket, and
    # other tests of the session land other data under the same dates in the shared one
    bucket = "exfm-slice-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]
    storage = cfg.storage.model_copy(update={"bucket": bucket})
    return cfg.model_copy(update={"data": data, "vms": VMS, "storage": storage})


def _assert_day(cfg, fm_first: str, rows: int):
    import mlflow
    import pyarrow.compute as pc

    from exfm.registry.mlflow_registry import connect, experiment_name, fm_model_name
    from exfm.storage.partitions import PartitionStore

    raw = PartitionStore(cfg, "raw")
    assert D2 in raw.list_days() and raw.manifest(D2).rows == rows
    aug = PartitionStore(cfg, "augmented")
    man = aug.manifest(D2)
    assert man is not None and man.fm_version == fm_first and man.rows == rows
    table = aug.read_day(D2, columns=["fm_pred_click", "fm_pred_like", "fm_version"])
    preds = table.column("fm_pred_click")
    assert pc.min(preds).as_py() >= 0 and pc.max(preds).as_py() <= 1
    assert set(table.column("fm_version").to_pylist()) == {fm_first}

    client = connect(cfg)
    fm_versions = {v.tags.get("day"): v for v in client.search_model_versions(
        f"name='{fm_model_name(cfg)}'")}
    v2 = fm_versions[D2]
    for tag in ("day", "rows_seen", "data_uris", "git_rev"):
        assert v2.tags.get(tag), f"FM version for {D2} lacks tag {tag}"
    assert int(v2.tags["rows_seen"]) == 2 * rows  # warm-started from day 1's snapshot
    assert raw.uri(D2) in v2.tags["data_uris"]
    return client, experiment_name(cfg, "vm"), mlflow


def test_one_day_slice_through_airflow(airflow_stack_cfg, tmp_path):
    from exfm.stack.services import airflow_env

    cfg = _slice_cfg(airflow_stack_cfg, tmp_path)
    pipeline.land(cfg, D1)
    fm1 = pipeline.train_fm(cfg, D1)["version"]
    rows = pipeline.land(cfg, D2)["rows"]  # the DAG re-lands it: idempotent

    env = airflow_env(cfg)
    env["EXFM_CONFIG"] = str(pipeline.write_resolved_config(cfg))
    # no DeadlineAlert under `dags test`: Airflow 3.3.2's dag.test() looks the DAG's alerts up by
    # id in the metadata DB after a successful run and gets their definitions (StatementError
    # "'dict' object has no attribute 'hex'"); the scheduler's runs are not affected
    import json

    env["EXFM_SCHEDULE"] = json.dumps({**json.loads(env["EXFM_SCHEDULE"]), "deadline": None})
    proc = subprocess.run(["airflow", "dags", "test", "exfm_daily", D2], env=env, text=True,
                          capture_output=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "state=failed" not in out and "Task failed" not in out, out[-4000:]

    client, vm_exp, mlflow = _assert_day(cfg, fm1, rows)
    exp = mlflow.get_experiment_by_name(vm_exp)
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.day = '{D2}'",
                              output_format="list")
    by_vm = {}
    for r in runs:
        by_vm.setdefault(r.data.tags["vm"], []).append(r)
    assert set(by_vm) == {"slice-d0", "slice-d1"}  # both mapped tasks logged their runs
    for vm, vm_runs in by_vm.items():
        fm_arm = [r for r in vm_runs if r.data.tags["arm"] == "fm"]
        assert fm_arm and fm_arm[0].data.tags["fm_version"] == fm1
        assert "train/auc" in fm_arm[0].data.metrics
        assert fm_arm[0].inputs.dataset_inputs, "no lineage: the run logged no input dataset"
    assert {r.data.tags["arm"] for r in by_vm["slice-d1"]} == {"fm", "control"}
    mv = client.search_model_versions("name='exfm-vm-slice-d0'")
    assert any(v.tags.get("fm_version") == fm1 and v.tags.get("day") == D2 for v in mv)


@pytest.mark.postgres
def test_one_day_slice_on_postgres(postgres_stack_cfg, tmp_path):
    from sqlalchemy import create_engine, text

    from exfm.db import database_url

    cfg = _slice_cfg(postgres_stack_cfg, tmp_path).model_copy(update={"vms": VMS[:1]})
    pipeline.land(cfg, D1)
    fm1 = pipeline.train_fm(cfg, D1)["version"]
    rows = pipeline.land(cfg, D2)["rows"]
    das = pipeline.augment(cfg, D2)
    assert das["fm_version"] == fm1
    pipeline.train_fm(cfg, D2)
    vm = pipeline.train_vm(cfg, D2, "slice-d0")
    assert vm["fm_version"] == fm1
    _assert_day(cfg, fm1, rows)
    # the lease store and MLflow's backend really are on PostgreSQL
    url = database_url(cfg, "exfm", create=False)
    assert url.startswith("postgresql")
    engine = create_engine(url)
    with engine.connect() as c:
        assert c.execute(text("SELECT version FROM exfm_snapshot_lease")).scalar() == fm1
    engine.dispose()
    engine = create_engine(database_url(cfg, "mlflow", create=False))
    with engine.connect() as c:
        names = {r[0] for r in c.execute(text("SELECT name FROM registered_models"))}
    engine.dispose()
    assert {"exfm-fm", "exfm-vm-slice-d0"} <= names
    assert os.environ.get("MLFLOW_TRACKING_URI") == cfg.tracking_uri

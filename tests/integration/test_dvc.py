"""The offline pipeline in DVC, in a temporary git repo with a tiny params set:

- ``dvc repro`` runs every stage and writes the metrics; a second ``dvc repro`` runs nothing;
- ``dvc exp run -S distillation.gs=...`` re-runs only the stages that read it (vm, tables,
  evaluate, report), never data/fm/augment; ``-S offline.tables=[per_task,freshness]`` re-runs
  only the tables stage and the report, which then holds those tables;
- ``dvc exp run --queue -S distillation.gs=1,2`` + ``dvc queue start``: ``dvc exp show`` lists
  both values (the amplifier sweep);
- ``dvc push`` / ``dvc pull`` round-trip the cache through the embedded SeaweedFS (S3 remote
  configured as ``make dvc-remote`` does: endpointurl, ``--local`` credentials).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
TINY = {"days": 6, "rows_per_day": 400, "fms": ["dcnv2"], "vms": ["fam"], "arms": ["wo", "ah"]}


def sh(repo: Path, *args: str, check: bool = True) -> str:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    p = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True,
                       timeout=900)
    out = p.stdout + p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{out[-4000:]}")
    return out


def ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvcrepo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / "exfm", repo / "exfm",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["offline"].update(TINY)
    params["state_dir"] = str(repo / ".exfm")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text(".exfm/\n")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "t@example.com")
    sh(repo, "git", "config", "user.name", "t")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "config", "core.analytics", "false")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    return repo


def test_repro_then_nothing_then_only_affected_stages(repo):
    out = sh(repo, "dvc", "repro")
    assert ran(out) == {"data", "fm@dcnv2", "augment@dcnv2", "vm@dcnv2-fam-wo",
                        "vm@dcnv2-fam-ah", "tables", "evaluate", "report"}, out
    metrics = json.loads((repo / "offline" / "metrics.json").read_text())
    assert set(metrics["dcnv2"]["fam"]) == {"wo", "ah"}
    assert 0 < metrics["dcnv2"]["fam"]["ah"]["auc"] <= 1
    assert "auc_gain_vs_wo" in metrics["dcnv2"]["fam"]["ah"]
    assert (repo / "offline" / "plots" / "auc.csv").read_text().startswith("cell,")
    assert (repo / "offline" / "report" / "results.md").exists()
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    assert "offline/metrics.json" in json.dumps(shown)

    again = sh(repo, "dvc", "repro")
    assert ran(again) == set(), again
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "repro")

    exp = sh(repo, "dvc", "exp", "run", "-S", "distillation.gs=1.0")
    assert ran(exp) == {"vm@dcnv2-fam-wo", "vm@dcnv2-fam-ah", "tables", "evaluate",
                        "report"}, exp
    listed = sh(repo, "dvc", "exp", "show", "--json")
    assert "distillation.gs" in listed or '"gs": 1.0' in listed

    # exfm reproduce's other tables: only the tables stage and the report re-run
    assert "One FM, one VM per task" not in (repo / "offline/report/results.md").read_text()
    exp = sh(repo, "dvc", "exp", "run", "-S", "offline.tables=[per_task,freshness]")
    assert ran(exp) == {"tables", "report"}, exp
    md = (repo / "offline" / "report" / "results.md").read_text()
    assert "One FM, one VM per task (mtl -> deepfam)" in md and "## Freshness" in md
    doc = json.loads((repo / "offline" / "tables" / "tables.json").read_text())
    assert {r["table"] for r in doc["rows"]} == {"per_task", "freshness"}
    assert not [q for q in doc["fm_quality"] if q["fm"] == "dcnv2"]  # reported once, by fm@


def test_queued_gs_sweep_shows_two_experiments(repo):
    import time

    if not (repo / "dvc.lock").exists():
        sh(repo, "dvc", "repro")
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "distillation.gs=1,2")
    sh(repo, "dvc", "queue", "start", "-j", "1")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = sh(repo, "dvc", "queue", "status")
        if not any(w in status for w in ("Queued", "Running")):
            break
        time.sleep(10)
    assert "Failed" not in status, status + sh(repo, "dvc", "queue", "logs", "-f", "x",
                                               check=False)
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    gs = set()
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = (rev.get("data") or {})
                p = data.get("params", {}).get("params.yaml", {}).get("data", {})
                if rev.get("name") and p:
                    gs.add(float(p["distillation"]["gs"]))
    assert {1.0, 2.0} <= gs, json.dumps(shown)[:3000]


def test_push_pull_round_trip_through_seaweedfs(repo, tmp_path_factory):
    from tests.integration.conftest import _start, make_test_config, stack_env

    from exfm.stack import stack_down

    if not (repo / "dvc.lock").exists():
        sh(repo, "dvc", "repro")
    cfg = make_test_config(tmp_path_factory.mktemp("dvcs3"))
    _start(cfg, ["s3"])
    try:
        with stack_env(cfg):
            _, secret = cfg.s3_credentials()
            # what `make dvc-remote` runs ($EXFM_CONFIG = this stack's config)
            sh(repo, "exfm", "offline", "remote")
            shared = (repo / ".dvc" / "config").read_text()
            assert secret not in shared and cfg.s3_endpoint in shared
            assert secret in (repo / ".dvc" / "config.local").read_text()
            assert ".dvc/config.local" not in sh(repo, "git", "status", "--porcelain")
            out = sh(repo, "dvc", "push")
            assert "pushed" in out, out
            before = sorted(p.relative_to(repo).as_posix()
                            for p in (repo / "offline" / "data").rglob("*.parquet"))
            shutil.rmtree(repo / "offline" / "data")
            shutil.rmtree(repo / ".dvc" / "cache")
            sh(repo, "dvc", "pull")
            after = sorted(p.relative_to(repo).as_posix()
                           for p in (repo / "offline" / "data").rglob("*.parquet"))
            assert after == before and before
            assert ran(sh(repo, "dvc", "repro")) == set()
    finally:
        stack_down(cfg, ["s3"])

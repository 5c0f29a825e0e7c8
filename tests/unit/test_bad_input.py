"""Bad input on the CLI, in the config file, in env overrides and in a dataset: one table.

Each case runs ``exfm`` in-process (``exfm.cli.main``, the console script's entry) in an empty
folder with every endpoint pointing at a closed port, and must: exit non-zero, print one error
line naming the option / key / env var / file and the rule, raise no exception (no traceback),
and write nothing (the folder is unchanged afterwards).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exfm.cli import main

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
BASE_ENV = {"EXFM_S3_ENDPOINT": DEAD, "EXFM_TRACKING_URI": DEAD, "EXFM_RAY_ADDRESS": DEAD,
            "EXFM_S3_ACCESS_KEY": "k", "EXFM_S3_SECRET_KEY": "s"}

GOOD_YAML = "data:\n  generator:\n    days: 2\n    rows_per_day: 50\n"


def _dataset(root: Path) -> Path:
    """A tiny valid dataset (2 days) plus a folder that breaks the format."""
    from exfm.config import load_config
    from exfm.data.generator import generate

    g = load_config(None, ["data.generator.days=2", "data.generator.rows_per_day=50"],
                    env={}).data.generator
    generate(g, root / "ds", progress=lambda *a: None)
    return root / "ds"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("bad-input-data"))


# (id, argv, extra env, files {name: text} written before the run, expected substrings)
# ``{ds}`` in argv is the tiny valid dataset.
CASES: list[tuple] = [
    # --- CLI: days ---------------------------------------------------------------------------
    ("run-day bad month", ["run-day", "--day", "2026-13-45", "--step", "land"], {}, {},
     ["--day", "YYYY-MM-DD"]),
    ("run-day not a day", ["run-day", "--day", "nope"], {}, {}, ["--day", "YYYY-MM-DD"]),
    ("run-day short day", ["run-day", "--day", "2026-1-1", "--step", "land"], {}, {},
     ["--day", "YYYY-MM-DD"]),
    ("run-day empty day", ["run-day", "--day", ""], {}, {}, ["--day"]),
    ("run-day bad step", ["run-day", "--day", "2026-01-01", "--step", "fly"], {}, {},
     ["--step", "fly"]),
    ("run-day no day", ["run-day"], {}, {}, ["--day"]),
    ("run-day train-vm no vm", ["run-day", "--day", "2026-01-01", "--step", "train-vm"], {}, {},
     ["--vm"]),
    ("run-day unknown vm", ["run-day", "--day", "2026-01-01", "--step", "train-vm", "--vm", "zz"],
     {}, {}, ["--vm", "zz"]),
    ("das augment bad day", ["das", "augment", "--day", "2026-02-30"], {}, {},
     ["--day", "YYYY-MM-DD"]),
    ("das update bad day", ["das", "update", "--day", "nope"], {}, {}, ["--day", "YYYY-MM-DD"]),
    ("das update mlflow down", ["das", "update", "--day", "2026-01-02"],
     {}, {}, ["tracking.uri", "127.0.0.1:9"]),
    ("ray submit bad day", ["ray", "submit", "train_fm", "--day", "nope"], {}, {},
     ["--day", "YYYY-MM-DD"]),
    ("ray submit unknown job", ["ray", "submit", "train_xx", "--day", "2026-01-01"], {}, {},
     ["train_xx"]),
    ("ray submit train_vm no vm", ["ray", "submit", "train_vm", "--day", "2026-01-01"], {}, {},
     ["--vm"]),
    ("ray submit unknown vm", ["ray", "submit", "train_vm", "--day", "2026-01-01", "--vm", "zz"],
     {}, {}, ["--vm", "zz"]),
    ("ray submit bad timeout", ["ray", "submit", "train_fm", "--day", "2026-01-01", "--timeout",
                                "-5"], {}, {}, ["--timeout"]),
    ("ray submit bad id", ["ray", "submit", "train_fm", "--day", "2026-01-01", "--id", "a b/c"],
     {}, {}, ["--id"]),
    ("ray status cluster down", ["ray", "status"], {}, {}, ["127.0.0.1:9"]),
    # --- CLI: data -----------------------------------------------------------------------------
    ("ingest day not in dataset", ["data", "ingest", "{ds}", "--days", "2030-01-01"], {}, {},
     ["2030-01-01", "--days"]),
    ("ingest bad day", ["data", "ingest", "{ds}", "--days", "2026-1-1"], {}, {},
     ["--days", "YYYY-MM-DD"]),
    ("ingest empty days", ["data", "ingest", "{ds}", "--days", ","], {}, {}, ["--days"]),
    ("ingest missing dir", ["data", "ingest", "{tmp}/nowhere"], {}, {}, ["nowhere"]),
    ("validate bad day format", ["data", "validate", "{ds}", "--days", "2026-1-1"], {}, {},
     ["--days", "YYYY-MM-DD"]),
    ("validate day not in dataset", ["data", "validate", "{ds}", "--days", "2031-01-01"], {}, {},
     ["2031-01-01"]),
    ("validate not a dataset", ["data", "validate", "{tmp}"], {}, {}, ["schema.yaml"]),
    ("generate days 0", ["data", "generate", "--out", "{tmp}/g", "--days", "0"], {}, {},
     ["--days"]),
    ("generate rows 3", ["data", "generate", "--out", "{tmp}/g", "--rows-per-day", "3"], {}, {},
     ["--rows-per-day"]),
    ("generate no out", ["data", "generate"], {}, {}, ["--out"]),
    ("unknown command", ["fly"], {}, {}, ["fly"]),
    ("unknown option", ["run-day", "--day", "2026-01-01", "--fast"], {}, {}, ["--fast"]),
    # --- config: --set ---------------------------------------------------------------------------
    ("set bad date", ["run-day", "--day", "2026-01-01", "--set",
                      "data.generator.start_date=2026-13-45"], {}, {},
     ["data.generator.start_date", "date"]),
    ("set empty vms", ["run-day", "--day", "2026-01-01", "--set", "vms=[]"], {}, {}, ["vms"]),
    ("set duplicate vm names", ["run-day", "--day", "2026-01-01", "--set",
                                "vms=[{name: a}, {name: a}]"], {}, {}, ["vms", "a"]),
    ("set unknown key", ["run-day", "--day", "2026-01-01", "--set", "ray.num_wrkers=2"], {}, {},
     ["ray.num_wrkers", "unknown key"]),
    ("set no equals", ["run-day", "--day", "2026-01-01", "--set", "ray.num_workers"], {}, {},
     ["--set", "key=value"]),
    ("set empty key", ["run-day", "--day", "2026-01-01", "--set", "=3"], {}, {},
     ["--set", "empty key"]),
    ("set negative workers", ["run-day", "--day", "2026-01-01", "--set", "ray.num_workers=-1"],
     {}, {}, ["ray.num_workers"]),
    ("set bad fm kind", ["run-day", "--day", "2026-01-01", "--set", "models.fm=gpt"], {}, {},
     ["models.fm"]),
    ("set bad distill mode", ["run-day", "--day", "2026-01-01", "--set",
                              "distillation.mode=magic"], {}, {}, ["distillation.mode"]),
    ("set into a scalar", ["run-day", "--day", "2026-01-01", "--set", "state_dir.x=1"], {}, {},
     ["state_dir", "not a section"]),
    ("set bad yaml", ["run-day", "--day", "2026-01-01", "--set", "vms=[a"], {}, {},
     ["--set", "vms"]),
    ("set bad port", ["run-day", "--day", "2026-01-01", "--set", "ports.s3=70000"], {}, {},
     ["ports.s3"]),
    ("set bad bucket", ["run-day", "--day", "2026-01-01", "--set", "storage.bucket=Bad_Bucket"],
     {}, {}, ["storage.bucket"]),
    ("set bad database kind", ["run-day", "--day", "2026-01-01", "--set", "database.kind=oracle"],
     {}, {}, ["database.kind"]),
    # --- config: file ------------------------------------------------------------------------------
    ("config file missing", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/none.yaml"], {},
     {}, ["none.yaml", "not found"]),
    ("config not yaml", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "a: [1\n"}, ["p.yaml", "YAML"]),
    ("config a list", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "- 1\n- 2\n"}, ["p.yaml", "mapping"]),
    ("config unknown key", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "rey:\n  num_workers: 2\n"}, ["p.yaml", "rey", "unknown key"]),
    ("config bad start_date", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "data:\n  generator:\n    start_date: 2026-02-30\n"},
     ["p.yaml", "data.generator.start_date"]),
    ("config days 0", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "data:\n  generator:\n    days: 0\n"}, ["p.yaml", "data.generator.days"]),
    ("config vm bad name", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "vms:\n  - name: Bad Name\n"}, ["p.yaml", "vms.0.name"]),
    ("config vm bad stage", ["run-day", "--day", "2026-01-01", "--config", "{tmp}/p.yaml"], {},
     {"p.yaml": "vms:\n  - name: a\n    stage: middle\n"}, ["p.yaml", "vms.0.stage"]),
    ("EXFM_CONFIG missing", ["run-day", "--day", "2026-01-01"], {"EXFM_CONFIG": "{tmp}/gone.yaml"},
     {}, ["gone.yaml", "not found"]),
    # --- config: env overrides -----------------------------------------------------------------------
    ("env database oracle", ["run-day", "--day", "2026-01-01"], {"EXFM_DATABASE": "oracle"}, {},
     ["$EXFM_DATABASE", "database.kind"]),
    ("env use_gpu maybe", ["run-day", "--day", "2026-01-01"], {"EXFM_USE_GPU": "maybe"}, {},
     ["$EXFM_USE_GPU", "ray.use_gpu"]),
    ("env bad bucket", ["run-day", "--day", "2026-01-01"], {"EXFM_S3_BUCKET": "Bad_Bucket"}, {},
     ["$EXFM_S3_BUCKET", "storage.bucket"]),
    ("env bad endpoint", ["run-day", "--day", "2026-01-01"], {"EXFM_S3_ENDPOINT": "ftp://x"}, {},
     ["$EXFM_S3_ENDPOINT", "storage.endpoint"]),
    ("env postgres without url", ["run-day", "--day", "2026-01-01"],
     {"EXFM_DATABASE": "postgres", "EXFM_DATABASE_URL": "mysql://u@h/db"}, {},
     ["$EXFM_DATABASE_URL", "database.url"]),
]


def _fmt(x: str, tmp: Path, ds: Path) -> str:
    return x.replace("{tmp}", str(tmp)).replace("{ds}", str(ds))


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_table_has_enough_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, dataset, monkeypatch, capsys):
    name, argv, env, files, expected = case
    work = tmp_path / "work"
    work.mkdir()
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    for var in [v for v in os.environ if v.startswith(("EXFM_", "MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(var)
    for k, v in {**BASE_ENV, "EXFM_STATE_DIR": str(tmp_path / "state"), **env}.items():
        monkeypatch.setenv(k, _fmt(v, tmp_path, dataset))
    monkeypatch.chdir(work)
    before, before_ds = _snapshot(tmp_path), _snapshot(dataset)
    t0 = time.monotonic()
    try:
        rc = main([_fmt(a, tmp_path, dataset) for a in argv])
    except BaseException as e:  # noqa: BLE001 - any escape is a traceback for the user
        pytest.fail(f"{name}: raised {type(e).__name__}: {e}")
    secs = time.monotonic() - t0
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert rc not in (0, None), f"{name}: accepted (rc={rc}); stdout={out.out!r}"
    assert "Traceback" not in out.err + out.out
    # click's usage errors add its two fixed "Usage:" / "Try ... --help" lines above the reason
    err = [line for line in lines if not line.startswith(("Usage: ", "Try '"))]
    assert len(err) == 1, f"{name}: expected one error line, got {lines}"
    for s in expected:
        assert s in err[0], f"{name}: {s!r} not in {err[0]!r}"
    assert secs < 20, f"{name}: took {secs:.0f} s to fail"
    assert _snapshot(tmp_path) == before, f"{name}: wrote files"
    assert _snapshot(dataset) == before_ds

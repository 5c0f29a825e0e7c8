"""``exfm demo`` (what ``make demo`` runs): the data, the stack, and a real ``airflow backfill
create`` of ``exfm_daily`` over the days, run by the scheduler (never ``dags test``), with progress
read from Airflow's REST API, then the results table from MLflow and the UIs with their login."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import click

from exfm.commands.options import config_options

DAG_ID = "exfm_daily"


class AirflowAPI:
    """The few REST calls the demo makes (a fresh JWT when the old one nears expiry)."""

    def __init__(self, cfg):
        from exfm.stack.services import airflow_url

        self.cfg, self.base = cfg, airflow_url(cfg) + "/api/v2"
        self._token, self._t = None, 0.0

    def get(self, path: str, method: str = "GET", body: dict | None = None):
        """The JSON answer of ``method path`` (``body`` sent as JSON); raises
        ``urllib.error.HTTPError`` on an error status."""
        from exfm.stack.services import airflow_token

        if self._token is None or time.monotonic() - self._t > 600:
            self._token, self._t = airflow_token(self.cfg), time.monotonic()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def cancel_running_backfills(self) -> list[dict]:
        """Cancel the DAG's unfinished backfills (an interrupted demo's): Airflow allows one per
        DAG. Their queued runs become failed (a new ``--reprocess-behavior failed`` backfill runs
        them again); a run already running goes on. Returns the cancelled ones."""
        out = []
        for b in self.get(f"/backfills?dag_id={DAG_ID}&limit=100")["backfills"]:
            if b.get("completed_at") is None:
                out.append(self.get(f"/backfills/{b['id']}/cancel", method="PUT"))
        return out

    def runs(self, days: list[str]) -> dict[str, dict]:
        """{day: the newest run of that logical day} for ``days``."""
        runs = self.get(f"/dags/{DAG_ID}/dagRuns?limit=500&order_by=-start_date")["dag_runs"]
        out: dict[str, dict] = {}
        for r in runs:
            d = (r.get("logical_date") or "")[:10]
            if d in days and d not in out:
                out[d] = r
        return out

    def task_instances(self, run_id: str) -> list[dict]:
        return self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]

    def log(self, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        q = f"?full_content=true&map_index={map_index}"
        out = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                       f"{try_number}{q}")
        content = out.get("content") if isinstance(out, dict) else out
        if isinstance(content, list):
            return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c)
                             for c in content)
        return str(content or "")


def airflow_cli(cfg, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``airflow ARGS`` with the environment ``eval "$(exfm stack env)"`` gives a shell."""
    from exfm.stack.services import airflow_shell_env

    proc = subprocess.run(["airflow", *args], env=airflow_shell_env(cfg), text=True,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise click.ClickException(f"airflow {' '.join(args)} failed:\n"
                                   f"{(proc.stdout + proc.stderr)[-2000:]}")
    return proc


def backfill_create(cfg, args: list[str], attempts: int = 6, log=click.echo) -> None:
    """``airflow backfill create``, retried while Airflow's SQLite says "database is locked" (the
    scheduler writes too). Airflow allows one unfinished backfill per DAG: one left by an
    interrupted demo, or a partial one from a locked attempt (seen: its first days only), is
    cancelled (said so) and the backfill created again; cancelling turns its queued days failed,
    which ``--reprocess-behavior failed`` runs again."""
    for k in range(attempts):
        p = airflow_cli(cfg, *args, check=False)
        out = p.stdout + p.stderr
        if p.returncode == 0:
            return
        if "AlreadyRunningBackfill" in out and k < attempts - 1:
            for b in AirflowAPI(cfg).cancel_running_backfills():
                log(f"  an unfinished backfill of {DAG_ID} (#{b.get('id')}, "
                    f"{(b.get('from_date') or '')[:10]} .. {(b.get('to_date') or '')[:10]}) was "
                    "cancelled; its queued days run again with this one")
            continue
        if "database is locked" not in out or k == attempts - 1:
            raise click.ClickException(f"airflow {' '.join(args)} failed:\n{out[-2000:]}")
        time.sleep(5 * (k + 1))


def unpause(cfg, timeout_s: float = 300, log=click.echo) -> None:
    """``airflow dags unpause exfm_daily`` once the DAG processor has parsed the DAG file."""
    deadline = time.monotonic() + timeout_s
    while True:
        p = airflow_cli(cfg, "dags", "unpause", DAG_ID, check=False)
        if p.returncode == 0:
            log(f"$ airflow dags unpause {DAG_ID}   (done)")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"{DAG_ID} could not be unpaused in {timeout_s:.0f}s:\n"
                                       f"{(p.stdout + p.stderr)[-1500:]}")
        time.sleep(5)


def _running(tis: list[dict]) -> str:
    busy = [t for t in tis if t.get("state") in ("running", "queued", "up_for_reschedule",
                                                 "up_for_retry", "scheduled")]
    if not busy:
        return "-"
    names = []
    for t in busy:
        n = t["task_id"] + (f"[{t.get('rendered_map_index') or t['map_index']}]"
                            if t.get("map_index", -1) >= 0 else "")
        names.append(f"{n} ({t['state']})")
    return ", ".join(names)


def follow(cfg, days: list[str], timeout_s: float, log=click.echo, poll_s: float = 10.0,
           expect_failure: str | None = None) -> dict:
    """Print ``day k of N, running task, elapsed`` until every day's run is terminal; returns
    {day: run}. Raises with the failed task's log tail when a day fails, unless it is
    ``expect_failure`` (``--break-day``: then it returns once that day's run failed)."""
    api = AirflowAPI(cfg)
    t0, last, last_print = time.monotonic(), "", 0.0
    while True:
        runs = api.runs(days)
        done = [d for d in days if runs.get(d, {}).get("state") == "success"]
        failed = [d for d in days if runs.get(d, {}).get("state") == "failed"]
        if expect_failure and failed == [expect_failure]:
            log(f"  day {expect_failure} failed, as broken: {time.monotonic() - t0:.0f}s")
            return runs
        if failed:
            d = failed[0]
            tis = api.task_instances(runs[d]["dag_run_id"])
            bad = [t for t in tis if t.get("state") == "failed"]
            tail = ""
            if bad:
                t = bad[0]
                tail = api.log(runs[d]["dag_run_id"], t["task_id"], max(t["try_number"], 1),
                               t.get("map_index", -1))[-3000:]
            raise click.ClickException(f"day {d}: run failed"
                                       + (f" at {bad[0]['task_id']}" if bad else "")
                                       + f"\n{tail}")
        if len(done) == len(days):
            log(f"  {len(days)} of {len(days)} day(s) done, {time.monotonic() - t0:.0f}s")
            return runs
        current = next((d for d in days if d not in done), None)
        run = runs.get(current)
        what = _running(api.task_instances(run["dag_run_id"])) if run else "waiting for the run"
        k = days.index(current) + 1 if current else len(days)
        line = f"  day {k} of {len(days)} ({current}): {what} [{len(done)} done]"
        now = time.monotonic()
        if line != last or now - last_print >= 60:
            log(f"{line}   elapsed {now - t0:.0f}s")
            last, last_print = line, now
        if now - t0 > timeout_s:
            raise click.ClickException(f"backfill not finished after {timeout_s:.0f}s: {line}")
        time.sleep(poll_s)


def check_logs(cfg, runs: dict, task_id: str = "land") -> None:
    """Each run's ``task_id`` log is readable through the API (what the UI shows)."""
    api = AirflowAPI(cfg)
    for d, r in runs.items():
        tis = [t for t in api.task_instances(r["dag_run_id"]) if t["task_id"] == task_id]
        text = api.log(r["dag_run_id"], task_id, max(tis[0]["try_number"], 1)) if tis else ""
        if len(text.strip()) < 20:
            raise click.ClickException(f"day {d}: the log of {task_id} is empty in Airflow")


def results_table(cfg) -> list[dict]:
    """One row per VM per day: the FM arm and its control (progressive eval on the day before
    training on it), the lift, the FM version and DAS's freshness gap, read back from MLflow."""
    import mlflow

    from exfm.registry.mlflow_registry import connect, experiment_name

    connect(cfg)

    def runs(family):
        exp = mlflow.get_experiment_by_name(experiment_name(cfg, family))
        return [] if exp is None else mlflow.search_runs(
            [exp.experiment_id], output_format="list", max_results=5000,
            order_by=["attributes.start_time ASC"])

    gap = {}
    for r in runs("das"):
        g = r.data.metrics.get("das/freshness_gap_days")
        gap[r.data.tags.get("day")] = (int(g) if g is not None and
                                       r.data.tags.get("status") == "committed" else None)
    cells: dict[tuple, dict] = {}
    for r in runs("vm"):  # oldest first: a re-run of a day overwrites its cell
        t, m = r.data.tags, r.data.metrics
        if "eval/auc" not in m and "train/auc" not in m:
            continue
        row = cells.setdefault((t.get("day"), t.get("vm")), {"day": t.get("day"), "vm": t.get("vm")})
        arm = "fm" if t.get("arm") == "fm" else "ctl"
        row[f"{arm}_auc"], row[f"{arm}_ne"] = m.get("eval/auc"), m.get("eval/ne")
        row[f"{arm}_cal"] = m.get("eval/calibration")
        if arm == "fm":
            row["fm_version"] = t.get("fm_version")
    out = []
    for (day, _vm), row in sorted(cells.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "")):
        a, c = row.get("fm_auc"), row.get("ctl_auc")
        row["lift_auc"] = a - c if a is not None and c is not None else None
        row["gap"] = gap.get(day)
        out.append(row)
    return out


COLUMNS = ["day", "vm", "fm_auc", "ctl_auc", "lift_auc", "fm_ne", "ctl_ne", "fm_cal", "ctl_cal",
           "fm_version", "gap"]


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:+.4f}" if isinstance(v, float) and v < 0 else
                                  f"{v:.4f}" if isinstance(v, float) else str(v))


def print_table(rows: list[dict], log=click.echo) -> None:
    widths = {c: max([len(c)] + [len(_fmt(r.get(c))) for r in rows]) for c in COLUMNS}
    log("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    for r in rows:
        log("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in COLUMNS))
    log("fm_* = the VM taught by the FM, ctl_* = its control arm (no FM), both scored on the day "
        "before training on it (progressive; '-' on a VM's first day); lift_auc = fm - ctl; "
        "gap = days between the day and the FM snapshot DAS used.")


def gap_notes(rows: list[dict], skipped, fm_name: str = "exfm-fm") -> list[str]:
    """One line per day of ``rows`` whose FM snapshot is more than a day old: why DAS served an
    older one. ``skipped(day, version)`` lists the FM versions passed over
    (:func:`exfm.registry.chain.skipped_fm_versions`)."""
    notes, seen = [], set()
    for r in rows:
        day, version, gap = r.get("day"), r.get("fm_version"), r.get("gap")
        if not gap or gap <= 1 or not version or version == "none" or day in seen:
            continue
        seen.add(day)
        passed = skipped(day, version)
        why = "; ".join(
            f"{fm_name} v{p['version']} (trained {p['day']}) " + (
                f"not blessed: {p['reason']}" if p["blessed"] == "false" else
                "registered after this day's DAS ran")
            for p in passed) or (f"no FM snapshot was trained after v{version}'s day "
                                 "(fm.every_days, or a train_fm that did not run)")
        notes.append(f"gap {gap} on {day}: DAS served {fm_name} v{version}; {why}")
    return notes


def last_report(cfg, day: str) -> dict | None:
    """Where day ``day``'s report run (``report/<day>`` in ``exfm-pipeline``) is and its headline
    lines (rebuilt from the same MLflow runs the report read); None when the day has none."""
    from exfm.registry.mlflow_registry import connect, experiment_name
    from exfm.report.day_report import collect_rows
    from exfm.report.table import headline

    client = connect(cfg)
    exp = client.get_experiment_by_name(experiment_name(cfg, "pipeline"))
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], f"tags.component = 'report' and tags.day = '{day}'", max_results=1)
    if not runs:
        return None
    from exfm.oncall import mlflow_run_url

    return {"url": mlflow_run_url(cfg.oncall.mlflow_base_url or cfg.tracking_uri,
                                  runs[0].info.run_id, exp.experiment_id),
            "headline": headline(day, collect_rows(cfg, [day]))}


BACKUP_DIR = ".broken-days"  # under data.dir: the days --break-day changed, as they were


def break_day(data_dir, day: str) -> str:
    """Corrupt day ``day`` of the dataset folder the way an upstream logging fault would: every
    row of the first label becomes 0 (the positives stop arriving). The day is still in the
    dataset format (``land`` accepts it), but the raw gate's "label rate within configured
    bounds" refuses it. The original parts are kept under ``DIR/.broken-days/day=D/`` and are
    the source of a second break (idempotent). Returns one line saying what changed."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc

    from exfm.data.io import read_day, write_day
    from exfm.data.schema import day_dir, load_schema

    label = load_schema(data_dir).labels[0]
    src, backup = day_dir(data_dir, day), day_dir(f"{data_dir}/{BACKUP_DIR}", day)
    if not backup.exists():
        shutil.copytree(src, backup)
    table = read_day(f"{data_dir}/{BACKUP_DIR}", day)
    col = table.column(label)
    positives = int(pc.sum(col).as_py() or 0)
    i = table.schema.get_field_index(label)
    write_day(data_dir, day, table.set_column(i, label, pa.array([0] * len(col), col.type)))
    return (f"day {day} broken: every '{label}' label set to 0 ({positives} of {len(col)} rows "
            f"were positive), as if its logging had stopped; the original day is in {backup}")


def restore_broken(data_dir) -> list[str]:
    """Put back the days an earlier ``--break-day`` changed (from ``DIR/.broken-days``); returns
    them. The kept originals are removed once restored."""
    import shutil
    from pathlib import Path

    from exfm.data.schema import day_dir, list_days

    kept = Path(data_dir) / BACKUP_DIR
    if not kept.is_dir():
        return []
    days = list_days(kept)
    for d in days:
        shutil.rmtree(day_dir(data_dir, d), ignore_errors=True)
        shutil.copytree(day_dir(kept, d), day_dir(data_dir, d))
    shutil.rmtree(kept)
    return days


def explain_failure(cfg, day: str, run: dict, log=click.echo) -> None:
    """What a broken day did, and where to look: the failed task and its alert, the tasks that
    did not run, each VM's champion (kept), the Airflow UI page of the failed task."""
    from exfm.registry.mlflow_registry import connect, vm_model_name
    from exfm.stack.services import airflow_url

    api = AirflowAPI(cfg)
    if run.get("state") != "failed":
        raise click.ClickException(
            f"--break-day: day {day}'s run ended '{run.get('state')}', not failed: the broken "
            f"day did not reach its raw gate (is data.dir {cfg.data_path} the folder the DAG's "
            "tasks land from?)")
    tis = api.task_instances(run["dag_run_id"])
    bad = [t for t in tis if t.get("state") == "failed"]
    skipped = sorted({t["task_id"] for t in tis if t.get("state") == "upstream_failed"})
    if not bad:
        log(f"day {day}: the run failed but no task did (see the Airflow UI)")
        return
    t = bad[0]
    text = api.log(run["dag_run_id"], t["task_id"], max(t["try_number"], 1), t.get("map_index", -1))
    alert = [ln for ln in text.splitlines() if "[exfm] FAILED" in ln or ln.strip().startswith(
        ("- ", "Data Docs:", "Airflow log:"))]
    log(f"day {day}: {t['task_id']} failed (try {t['try_number']}); the on-call alert:")
    for ln in alert[:12] or text.splitlines()[-12:]:
        log(f"    {ln.strip()[:300]}")
    log(f"not run (upstream failed): {', '.join(skipped) or '-'}")
    client = connect(cfg)
    for vm in cfg.vms:
        try:
            mv = client.get_model_version_by_alias(vm_model_name(vm.name), "champion")
            log(f"champion kept: {vm_model_name(vm.name)} v{mv.version} (trained on "
                f"{mv.tags.get('day')})")
        except Exception:  # noqa: BLE001 - no champion yet (a break on day 1 or 2)
            log(f"champion: {vm_model_name(vm.name)} has none yet")
    log(f"look at: {airflow_url(cfg)}/dags/{DAG_ID}/runs/{run['dag_run_id']}/tasks/{t['task_id']}"
        f"  (the task log holds the alert; the gate's Data Docs link is in it)")


def pin_calendar(cfg, days: list[str]):
    """``(cfg, end)``: the demo replays a folder's recorded days, so with ``schedule.end_date``
    unset the calendar of a ``dir`` source (open-ended for ``stack up``: live days keep landing)
    ends at the folder's last day. Otherwise unpausing schedules today's run, which waits
    ``data_wait_s`` for data that never comes, then fails and alerts, and a day triggered
    meanwhile queues behind it (``max_active_runs`` 1). ``end`` is None when nothing changed."""
    if cfg.schedule.end_date is not None or cfg.data.source != "dir" or not days:
        return cfg, None
    sch = cfg.schedule.model_copy(update={"end_date": days[-1]})
    return cfg.model_copy(update={"schedule": sch}), days[-1]


@click.command()
@click.option("--days", type=int, default=8, show_default=True,
              help="days to backfill through the scheduler, from the data's first day")
@click.option("--timeout", "timeout_s", type=int, default=7200, show_default=True,
              help="seconds to wait for the backfill")
@click.option("--keep-up/--down", default=True, show_default=True,
              help="leave the stack running at the end to browse the UIs")
@click.option("--break-day", "break_n", type=int, default=None,
              help="a forced failure: corrupt day N (1-based) of the data so that its raw gate "
                   "fails; the backfill runs days 1..N and shows the alert and the champions kept")
@config_options
def demo(cfg, days: int, timeout_s: int, keep_up: bool, break_n: int | None) -> None:
    """Prepare the data, start the embedded stack, unpause exfm_daily and backfill DAYS days
    through Airflow's scheduler (`airflow backfill create`), following each day's tasks; then
    print the results table and the UIs to browse. With --break-day N, day N's data is broken
    first and the backfill stops there: the raw gate fails it with a readable alert."""
    from exfm import pipeline
    from exfm.config import SECRETS_FILE
    from exfm.data.schema import list_days
    from exfm.stack import stack_down, stack_up
    from exfm.oncall import MLFLOW_RUNS_VIEW
    from exfm.stack.services import airflow_url

    t0 = time.monotonic()
    click.echo("== 1/5 data")
    data = pipeline.data_dir(cfg)
    available = list_days(data)
    if days < 1 or len(available) < days:
        raise click.ClickException(f"--days {days}: {data} has {len(available)} day(s)")
    todo = available[:days]
    broken = None
    if break_n is not None:
        if not 1 <= break_n <= days:
            raise click.ClickException(f"--break-day {break_n}: choose a day in 1..{days}")
        todo, broken = todo[:break_n], todo[break_n - 1]  # later days would wait on it forever
        click.echo(break_day(data, broken))
    else:
        for d in restore_broken(data):
            click.echo(f"day {d} restored (an earlier --break-day had broken it); a run of it "
                       "that failed re-runs with the backfill")
    click.echo(f"{data}: {len(available)} days, backfilling {todo[0]} .. {todo[-1]}")
    cfg, end = pin_calendar(cfg, available)
    if end:
        click.echo(f"calendar: exfm_daily ends at {end}, the folder's last day (schedule.end_date "
                   "unset; set it to schedule days after that)")
    click.echo("== 2/5 stack")
    stack_up(cfg, log=click.echo)
    try:
        click.echo(f"== 3/5 {DAG_ID}: unpause, backfill {len(todo)} day(s) through the "
                   "scheduler")
        unpause(cfg)
        api = AirflowAPI(cfg)
        if broken and api.runs([broken]).get(broken, {}).get("state") == "success":
            click.echo(f"$ airflow tasks clear {DAG_ID} -s {broken} -e {broken}T23:59:59 -y"
                       "   (it ran before: re-run it with the broken data)")
            airflow_cli(cfg, "tasks", "clear", DAG_ID, "-s", broken, "-e", f"{broken}T23:59:59",
                        "-y")
        if all(r.get("state") == "success" for r in api.runs(todo).values()) and \
                len(api.runs(todo)) == len(todo):
            click.echo("every day already ran (clear one to re-run it: see README)")
        else:
            args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", todo[0],
                    "--to-date", todo[-1], "--reprocess-behavior", "failed"]
            click.echo("$ airflow " + " ".join(args))
            backfill_create(cfg, args)
        click.echo(f"== 4/5 following the runs (UI: {airflow_url(cfg)}/dags/{DAG_ID})")
        runs = follow(cfg, todo, timeout_s, expect_failure=broken)
        check_logs(cfg, runs)
        if broken:
            click.echo(f"== the broken day ({broken})")
            explain_failure(cfg, broken, runs[broken])
            click.echo(f"the next `exfm demo` without --break-day puts day {broken} back (from "
                       f"{data}/{BACKUP_DIR}) and re-runs it")
        click.echo("== 5/5 results (from MLflow)")
        table = results_table(cfg)
        print_table(table)
        from exfm.registry.chain import skipped_fm_versions
        from exfm.registry.mlflow_registry import fm_model_name

        for line in gap_notes(table, lambda d, v: skipped_fm_versions(cfg, d, v),
                              fm_model_name(cfg)):
            click.echo(line)
        # a day whose run just failed may still have MLflow runs from an earlier, successful run
        if broken and any(r["day"] == broken for r in table):
            click.echo(f"the rows of {broken} are from an earlier successful run of the day: "
                       "this run failed before training")
        rep = last_report(cfg, todo[-1])
        if rep:
            note = (" (from an earlier successful run of the day; this run failed)"
                    if (runs.get(todo[-1]) or {}).get("state") != "success" else "")
            click.echo(f"\nday report {todo[-1]}{note}: {rep['url']}")
            for line in rep["headline"]:
                click.echo(f"  {line}")
    except BaseException:
        if not keep_up:
            stack_down(cfg, log=click.echo)
        raise
    click.echo(f"\ndemo finished in {time.monotonic() - t0:.0f} s. Browse:")
    # the password is printed once, by the `stack up` that generated it; after that, its file
    click.echo(f"  Airflow  {airflow_url(cfg)}  (login {cfg.airflow.admin_user}; password: "
               f"airflow_password in {cfg.state_path / SECRETS_FILE})")
    click.echo(f"  MLflow   {cfg.tracking_uri}/#/experiments?{MLFLOW_RUNS_VIEW}  (login admin; "
               "password: mlflow_admin_password in "
               f"{cfg.state_path / SECRETS_FILE})")
    click.echo(f"  Ray      {cfg.ray_dashboard_url}")
    click.echo(f"  S3       {cfg.s3_endpoint} bucket '{cfg.storage.bucket}' "
               f"(keys in {cfg.state_path}/secrets.json)")
    click.echo('Airflow CLI against this stack: eval "$(.venv/bin/exfm stack env)"')
    if keep_up:
        click.echo("Stop everything with `make stack-down` (or `.venv/bin/exfm stack down`).")
    else:
        stack_down(cfg, log=click.echo)

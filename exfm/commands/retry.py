"""``exfm retry-day``: run a failed day again through the scheduler, for the person on call.

    exfm retry-day --day 2026-01-04      # after fixing what failed it (data, config, a service)

It clears the failed tasks of the day's run (``POST /api/v2/dags/exfm_daily/clearTaskInstances``,
failed and upstream-failed only: what succeeded is kept). Airflow 3.3 cannot clear a failed run
whose queued-at deadline is still ahead (apache/airflow#70368: the API answers 500, ``airflow
tasks clear`` stops with a ``TypeError``); then the run is deleted and its day triggered again,
and the command says so. A day's partitions and versions are keyed by its date, not its run, so
the new run finds what the old one committed.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse

import click

from exfm.commands.demo import DAG_ID, AirflowAPI
from exfm.commands.options import config_options, day_callback

FAILED = ("failed", "upstream_failed")


def retry_day(cfg, day: str, log=click.echo) -> dict:
    """Re-run day ``day``'s failed tasks; returns ``{"how": "cleared" | "triggered", "run_id",
    "tasks"}`` (the tasks that failed). Raises ``click.ClickException`` when the day has no run or
    its run did not fail."""
    api = AirflowAPI(cfg)
    run = api.runs([day]).get(day)
    if run is None:
        raise click.ClickException(f"{DAG_ID} has no run of {day}: start it with `airflow "
                                   f"dags trigger {DAG_ID} --logical-date {day}T00:00:00+00:00`")
    rid = run["dag_run_id"]
    if run["state"] != "failed":
        raise click.ClickException(f"{DAG_ID} {day} ({rid}) is {run['state']}, not failed: "
                                   "nothing to retry (re-run a finished day with `airflow tasks "
                                   f"clear {DAG_ID} -s {day} -e {day}T23:59:59 -y`)")
    tasks = sorted({t["task_id"] for t in api.task_instances(rid) if t.get("state") in FAILED})
    log(f"{DAG_ID} {day} ({rid}) failed; tasks to run again: {', '.join(tasks) or '-'}")
    try:
        api.get(f"/dags/{DAG_ID}/clearTaskInstances", method="POST", body={
            "dry_run": False, "dag_run_id": rid, "only_failed": True, "reset_dag_runs": True,
            "include_downstream": True})
        log(f"cleared them: the scheduler runs them again ({DAG_ID} {day} is queued)")
        return {"how": "cleared", "run_id": rid, "tasks": tasks}
    except urllib.error.HTTPError as e:
        if e.code != 500:
            raise click.ClickException(f"clearing {DAG_ID} {day} ({rid}) failed: HTTP {e.code} "
                                       f"{e.read()[:500]!r}") from None
    log("Airflow could not clear this failed run (HTTP 500: its queued-at deadline is still "
        "ahead, apache/airflow#70368); deleting the run and triggering its day again")
    api.get(f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(rid, safe='')}", method="DELETE")
    new = api.get(f"/dags/{DAG_ID}/dagRuns", method="POST",
                  body={"logical_date": f"{day}T00:00:00Z"})
    log(f"triggered {DAG_ID} {day} again as {new['dag_run_id']}")
    return {"how": "triggered", "run_id": new["dag_run_id"], "tasks": tasks}


@click.command("retry-day")
@click.option("--day", required=True, callback=day_callback, help="the failed day (YYYY-MM-DD)")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="follow the day's run until it ends (as `exfm demo` does)")
@click.option("--timeout", "timeout_s", type=int, default=7200, show_default=True,
              help="seconds to wait with --wait")
@config_options
def retry_day_cmd(cfg, day: str, wait: bool, timeout_s: int) -> None:
    """Run DAY's failed tasks of exfm_daily again (after fixing what failed them)."""
    from exfm.commands.demo import follow

    retry_day(cfg, day)
    if wait:
        time.sleep(2)
        follow(cfg, [day], timeout_s)

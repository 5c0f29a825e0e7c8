"""``exfm demo`` (what ``make demo`` runs): the stack, the data, and the daily DAG over days."""

from __future__ import annotations

import subprocess
import time

import click

from exfm.commands.options import config_options


def airflow_dags_test(cfg, day: str, log_path, log=click.echo) -> None:
    """Run ``exfm_daily`` for ``day`` through Airflow (``airflow dags test``: the real DAG, its
    tasks in this process, the run recorded in Airflow's DB so the UI shows it)."""
    from exfm.stack.services import airflow_env

    env = airflow_env(cfg)
    cmd = ["airflow", "dags", "test", "exfm_daily", day]
    log(f"$ {' '.join(cmd)}   (full log: {log_path})")
    keys = ("EXFM_RESULT", "DAS ", "ingested", "ray job", "ERROR", "Traceback", "state=",
            "Task failed", "no FM snapshot")
    tail: list[str] = []
    with open(log_path, "a") as full, subprocess.Popen(
            cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:  # stream: a long day shows its progress as it goes
            full.write(line)
            tail = (tail + [line.rstrip()])[-60:]
            if any(k in line for k in keys) and "great_expectations" not in line:
                log("  " + line.rstrip()[-200:])
        rc = proc.wait()
    if rc != 0 or any("state=failed" in x for x in tail):
        raise click.ClickException(f"exfm_daily failed for {day} (see {log_path}):\n"
                                   + "\n".join(tail[-25:]))


def results_table(cfg) -> list[dict]:
    """One row per VM arm per day, read back from MLflow (what the UI shows)."""
    import mlflow

    from exfm.registry.mlflow_registry import connect, experiment_name

    connect(cfg)
    exp = mlflow.get_experiment_by_name(experiment_name(cfg, "vm"))
    if exp is None:
        return []
    runs = mlflow.search_runs([exp.experiment_id], output_format="list", max_results=1000)
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        rows.append({"day": t.get("day"), "vm": t.get("vm"), "arm": t.get("arm"),
                     "mode": t.get("mode"), "fm_version": t.get("fm_version"),
                     "eval_auc": m.get("eval/auc"), "eval_ne": m.get("eval/ne"),
                     "eval_calibration": m.get("eval/calibration"),
                     "train_auc": m.get("train/auc"), "steps": m.get("train/steps")})
    return sorted(rows, key=lambda x: (x["day"] or "", x["vm"] or "", x["arm"] or ""))


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def print_table(rows: list[dict]) -> None:
    cols = ["day", "vm", "arm", "mode", "fm_version", "eval_auc", "eval_ne", "eval_calibration",
            "train_auc", "steps"]
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols} if rows else {}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(_fmt(r[c]).ljust(widths[c]) for c in cols))


@click.command()
@click.option("--days", type=int, default=2, show_default=True,
              help="simulated days to run through the DAG, from the data's first day")
@click.option("--keep-up/--down", default=True, show_default=True,
              help="leave the stack running at the end to browse the UIs")
@config_options
def demo(cfg, days: int, keep_up: bool) -> None:
    """Start the embedded stack, prepare the data, run the daily DAG over DAYS days, print the
    results table and the UIs to browse. eval_* is the progressive metric: yesterday's snapshot
    scored on the day before training on it (empty on a VM's first day)."""
    from exfm import pipeline
    from exfm.config import read_state_secrets
    from exfm.data.schema import list_days
    from exfm.stack import stack_down, stack_up
    from exfm.stack.services import airflow_url

    t0 = time.monotonic()
    click.echo("== 1/4 stack")
    stack_up(cfg, log=click.echo)
    try:
        click.echo("== 2/4 data")
        data = pipeline.data_dir(cfg)
        available = list_days(data)
        if len(available) < days:
            raise click.ClickException(f"{data} has {len(available)} days; --days {days} asks more")
        click.echo(f"{data}: {len(available)} days, running {available[:days]}")
        click.echo(f"== 3/4 exfm_daily over {days} day(s)")
        for day in available[:days]:
            t = time.monotonic()
            airflow_dags_test(cfg, day, cfg.state_path / "logs" / f"demo-{day}.log")
            click.echo(f"day {day} done in {time.monotonic() - t:.0f} s")
        click.echo("== 4/4 results (from MLflow)")
        print_table(results_table(cfg))
    except BaseException:
        if not keep_up:
            stack_down(cfg, log=click.echo)
        raise
    secrets = read_state_secrets(cfg.state_path)
    click.echo(f"\ndemo finished in {time.monotonic() - t0:.0f} s. Browse:")
    click.echo(f"  Airflow  {airflow_url(cfg)}  (login {cfg.airflow.admin_user} / "
               f"{secrets.get('airflow_password', '<see state_dir/secrets.json>')})")
    click.echo(f"  MLflow   {cfg.tracking_uri}")
    click.echo(f"  Ray      {cfg.ray_dashboard_url}")
    click.echo(f"  S3       {cfg.s3_endpoint} bucket '{cfg.storage.bucket}' "
               f"(keys in {cfg.state_path}/secrets.json)")
    if keep_up:
        click.echo("Stop everything with `make stack-down` (or `.venv/bin/exfm stack down`).")
    else:
        stack_down(cfg, log=click.echo)

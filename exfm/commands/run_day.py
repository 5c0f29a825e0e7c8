"""``exfm run-day --day D``: one day through the real parts without Airflow (for debugging)."""

from __future__ import annotations

import json
import time

import click

from exfm.commands.options import config_options, day_callback


@click.command("run-day")
@click.option("--day", required=True, callback=day_callback, help="logical date YYYY-MM-DD")
@click.option("--step", type=click.Choice(["all", "land", "augment", "train-fm", "train-vm"]),
              default="all", show_default=True, help="run one step only")
@click.option("--vm", default=None, help="with --step train-vm: the VM to train")
@config_options
def run_day(cfg, day: str, step: str, vm: str | None) -> None:
    """Land day D, augment it with FM_{<D} (DAS), train the FM on it and every VM, as the DAG
    does; each heavy step is a Ray job on the configured cluster."""
    from exfm import pipeline
    from exfm.commands.options import require_vm

    if step == "train-vm":
        require_vm(cfg, vm, "--step train-vm")
    t = time.monotonic()
    # each invocation runs its Ray jobs anew (an id that already succeeded returns that result)
    tag = time.strftime("r%Y%m%dT%H%M%S", time.gmtime())
    if step == "all":
        out = pipeline.run_day(cfg, day, log=click.echo, run_tag=tag)
    elif step == "land":
        out = pipeline.land(cfg, day, log=click.echo)
    elif step == "augment":
        out = pipeline.augment(cfg, day, pipeline.step_submission_id("das", day, run_tag=tag),
                               log=click.echo)
    elif step == "train-fm":
        out = pipeline.train_fm(cfg, day, pipeline.step_submission_id("fm", day, run_tag=tag),
                                log=click.echo)
    else:
        out = pipeline.train_vm(cfg, day, vm, pipeline.step_submission_id("vm", day, vm, tag),
                                log=click.echo)
    click.echo(json.dumps(out, indent=1, default=str))
    click.echo(f"run-day {day} ({step}) done in {time.monotonic() - t:.0f} s")

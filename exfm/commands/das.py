"""``exfm das``: the Data Augmentation Service by hand (the DAG calls the same functions).

    exfm das augment --day D [--final]   # infer the leased FM on day D, commit augmented/day=D
    exfm das lease                       # the leased FM snapshot, its generation and expiry
    exfm das update --day D              # one updater poll (lease the newest FM before D)
    exfm das gc                          # archive snapshots whose lease expired
"""

from __future__ import annotations

import json
import time

import click

from exfm.commands.options import config_options, day_callback


@click.group()
def das() -> None:
    """Data Augmentation Service: FM batch inference, snapshot lease, snapshot GC."""


@das.command()
@click.option("--day", required=True, callback=day_callback, help="logical date YYYY-MM-DD")
@click.option("--final", is_flag=True, help="late labels: close the label window now")
@config_options
def augment(cfg, day: str, final: bool) -> None:
    """Infer the leased FM once per row of DAY and commit augmented/day=DAY, driven from this
    process (the DAG submits ray_jobs.das_infer, which calls the same function)."""
    from exfm.jobs import das_day

    click.echo(json.dumps(das_day.run(cfg, day, final=final).as_dict(), default=str))


@das.command()
@config_options
def lease(cfg) -> None:
    """Show the leased FM snapshot."""
    from exfm.das.store import lease_store
    from exfm.registry.mlflow_registry import fm_model_name

    fm = fm_model_name(cfg)
    cur = lease_store(cfg).get(fm)
    if cur is None:
        raise click.ClickException(f"no lease for '{fm}' yet (run `exfm das update`)")
    left = cur.lease_expiry - time.time()
    click.echo(json.dumps({"fm_model": cur.fm_name, "version": cur.version, "uri": cur.uri,
                           "generation": cur.generation, "expires_in_s": round(left, 1)}))


@das.command()
@click.option("--day", required=True, callback=day_callback,
              help="lease the newest FM trained before this day")
@config_options
def update(cfg, day: str) -> None:
    """One updater poll: CAS-move the lease to the newest snapshot, or extend it."""
    from exfm.das.augment import update_lease
    from exfm.registry.mlflow_registry import require_tracking

    require_tracking(cfg)
    click.echo(f"updater: {update_lease(cfg, day)}")


@das.command()
@config_options
def gc(cfg) -> None:
    """Archive FM snapshots whose lease expired and that no one serves (keeps das.keep_last)."""
    from exfm.das.gc import collect_snapshots

    done = collect_snapshots(cfg, log=click.echo)
    click.echo(f"gc: {len(done)} snapshot(s) archived")

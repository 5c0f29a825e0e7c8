"""``exfm promote`` / ``exfm rollback`` / ``exfm gate``: the promotion gate by hand, for the
person on call. Every action is recorded on the version like the gate's own decisions
(``gate.*`` tags: what, why, who, and a ``gate.history`` entry).

    exfm promote --vm d0-click --version 7 --reason "fixed upstream"   # @champion -> v7
    exfm rollback --vm d0-click --reason "CTR dropped after v9"         # @champion -> @champion_prev
    exfm gate --vm d0-click --day 2026-01-05                            # what the DAG's promote task runs
"""

from __future__ import annotations

import json

import click

from exfm.commands.options import config_options, day_callback, require_vm


def _run(fn, *args, **kwargs):
    from exfm.promotion.gate import GateError
    from exfm.registry.mlflow_registry import RegistryError

    try:
        return fn(*args, **kwargs)
    except (GateError, RegistryError) as e:
        raise click.ClickException(str(e)) from None


@click.command()
@click.option("--vm", required=True, help="the VM (a name from config vms)")
@click.option("--version", "version", required=True, help="the version to make @champion")
@click.option("--reason", required=True, help="why (recorded on the version)")
@click.option("--by", default=None, help="who (default: the login name)")
@config_options
def promote(cfg, vm: str, version: str, reason: str, by: str | None) -> None:
    """Make VERSION the @champion of VM (the old one becomes @champion_prev)."""
    from exfm.promotion.gate import promote as do_promote

    require_vm(cfg, vm, "promote")
    d = _run(do_promote, cfg, vm, version, reason, by=by, log=click.echo)
    click.echo(json.dumps(d.as_dict()))


@click.command()
@click.option("--vm", required=True, help="the VM (a name from config vms)")
@click.option("--reason", required=True, help="why (recorded on both versions)")
@click.option("--by", default=None, help="who (default: the login name)")
@config_options
def rollback(cfg, vm: str, reason: str, by: str | None) -> None:
    """Point @champion of VM back at @champion_prev."""
    from exfm.promotion.gate import rollback as do_rollback

    require_vm(cfg, vm, "rollback")
    d = _run(do_rollback, cfg, vm, reason, by=by, log=click.echo)
    click.echo(json.dumps(d.as_dict()))


@click.command()
@click.option("--vm", required=True, help="the VM (a name from config vms)")
@click.option("--day", required=True, callback=day_callback, help="the day whose rows judge")
@config_options
def gate(cfg, vm: str, day: str) -> None:
    """Run the promotion gate of VM for DAY (the newest version before DAY vs @champion)."""
    from exfm.promotion.gate import gate_vm

    require_vm(cfg, vm, "gate")
    d = _run(gate_vm, cfg, day, vm, log=click.echo)
    click.echo(json.dumps(d.as_dict()))

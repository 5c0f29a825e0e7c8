"""The data gates a day must pass: :func:`gate_raw` before the FM trains on it, and
:func:`gate_augmented` before VMs read it (docs/validation.md).

The pure part (:func:`check_raw`, :func:`check_augmented`) takes a table, the schema, the
trailing days' statistics and the GX folder, and needs no services; the ``gate_*`` functions read
the committed day and its trailing statistics from the bucket, upload the Data Docs under the day
and store the day's statistics (when it passes) for the days after it.

Example:
    >>> res = gate_raw(cfg, "2026-01-02")      # doctest: +SKIP
    >>> res.raise_if_failed()  # raises GateFailed(res.reason)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Callable

import pyarrow as pa

from exfm.config import ExfmConfig
from exfm.config.validation import ValidationConfig
from exfm.data.schema import DatasetSchema
from exfm.validation.result import Failure, GateResult
from exfm.validation.stats import day_stats
from exfm.validation.suites import (AUGMENTED_SUITE, RAW_SUITE, SUITE_VERSION, Check,
                                    augmented_checks, raw_checks)

Log = Callable[[str], None]


def gx_root(cfg: ExfmConfig) -> Path:
    """The GX file data context's folder: ``<state_dir>/gx``."""
    return cfg.state_path / "gx"


def _observed(r) -> str:
    res = r.result or {}
    if r.exception_info and r.exception_info.get("raised_exception"):
        return f"error: {str(r.exception_info.get('exception_message'))[:200]}"
    if res.get("unexpected_count") is not None:
        sample = res.get("partial_unexpected_list") or []
        pct = res.get("unexpected_percent")
        tail = f" ({pct:.3g}% of non-null)" if isinstance(pct, (int, float)) else ""
        return (f"{res['unexpected_count']} unexpected value(s){tail}, e.g. "
                f"{[_plain(x) for x in sample[:5]]}")
    return str(_plain(res.get("observed_value")))


def _plain(x):
    if hasattr(x, "item"):
        try:
            return x.item()
        except (ValueError, AttributeError):
            return x
    if isinstance(x, float):
        return round(x, 6)
    return x


def _check_table(gate: str, suite_name: str, table: pa.Table, day: str, checks: list[Check],
                 root: str | Path, stats: dict) -> GateResult:
    from exfm.validation.context import run_suite

    df = table.to_pandas()
    for c in df.columns:  # pandas' "str" dtype is not a type GX's type-list check recognises
        if str(df[c].dtype) in ("str", "string"):
            df[c] = df[c].astype(object)
    run = run_suite(root, suite_name, [c.expectation for c in checks], df,
                    run_name=f"{day}", meta={"exfm_suite_version": SUITE_VERSION, "day": day})
    missing = {c for c in (ch.column for ch in checks) if c and c not in df.columns}
    failures = []
    for check, r in zip(checks, run.results):
        if r.success:
            continue
        if check.column in missing and r.expectation_config.type != "expect_column_to_exist":
            continue  # one failure per missing column, not one per rule on it
        failures.append(Failure(rule=check.rule, expectation=r.expectation_config.type,
                                column=check.column, observed=_observed(r),
                                expected=check.expected))
    page = run.page.as_uri() if run.page else None
    return GateResult(gate=gate, day=day, ok=not failures, evaluated=len(checks),
                      failures=failures, docs_url=page, local_docs=page, stats=stats)


def check_raw(table: pa.Table, schema: DatasetSchema, day: str, trailing: list[dict],
              vcfg: ValidationConfig, root: str | Path) -> GateResult:
    """Run the raw-day suite on ``table`` (no services; Data Docs built under ``root``)."""
    return _check_table("raw", RAW_SUITE, table, day, raw_checks(schema, day, trailing, vcfg),
                        root, day_stats(table, schema))


def check_augmented(table: pa.Table, schema: DatasetSchema, day: str, raw_rows: int | None,
                    trailing: list[dict], vcfg: ValidationConfig,
                    root: str | Path) -> GateResult:
    """Run the augmented-day suite on ``table`` (no services)."""
    stats = day_stats(table, schema)
    return _check_table("augmented", AUGMENTED_SUITE, table, day,
                        augmented_checks(schema, day, raw_rows, trailing, vcfg,
                                         stats["label_rate"]), root, stats)


# -- the gates on the bucket -------------------------------------------------------------------
def gate_raw(cfg: ExfmConfig, day: str, log: Log = print) -> GateResult:
    """Validate the committed ``raw/day=D`` partition; see :func:`check_raw`."""
    from exfm.storage.layout import RAW
    from exfm.storage.partitions import PartitionStore, load_remote_schema

    schema = load_remote_schema(cfg)
    store = PartitionStore(cfg, RAW)
    digest = _digest(store, day)
    table = store.read_day(day)
    trailing = trailing_stats(cfg, RAW, day, cfg.validation.trailing_days)
    res = check_raw(table, schema, day, trailing, cfg.validation, gx_root(cfg))
    return _publish(cfg, RAW, res, log, digest)


def gate_augmented(cfg: ExfmConfig, day: str, log: Log = print) -> GateResult:
    """Validate the committed ``augmented/day=D`` partition against its raw day."""
    from exfm.storage.layout import AUGMENTED, RAW
    from exfm.storage.partitions import PartitionStore, load_remote_schema

    schema = load_remote_schema(cfg)
    store = PartitionStore(cfg, AUGMENTED)
    digest = _digest(store, day)
    table = store.read_day(day)
    raw = PartitionStore(cfg, RAW).manifest(day)
    trailing = trailing_stats(cfg, AUGMENTED, day, cfg.validation.trailing_days)
    res = check_augmented(table, schema, day, raw.rows if raw else None, trailing,
                          cfg.validation, gx_root(cfg))
    return _publish(cfg, AUGMENTED, res, log, digest)


def _digest(store, day: str) -> str | None:
    """The committed manifest's content digest, read BEFORE the rows: if the day is replaced
    while the gate reads it, the stats are keyed to the older digest and so ignored (never the
    reverse: stats of old rows under the new digest)."""
    m = store.manifest(day)
    return m.digest if m is not None else None


def trailing_stats(cfg: ExfmConfig, prefix: str, day: str, n: int) -> list[dict]:
    """Statistics of the ``n`` committed days before ``day`` under ``prefix``: the gate's stored
    ``_stats.json`` where it passed on the rows committed now (its ``digest`` is the current
    manifest's), else the manifest's row count alone. A day re-landed or replaced after its gate
    passed keeps a ``_stats.json`` of rows that no longer exist: it is ignored."""
    import json

    from exfm.storage.layout import stats_key
    from exfm.storage.partitions import PartitionStore
    from exfm.storage.s3 import StorageError, get_bytes

    store = PartitionStore(cfg, prefix)
    out = []
    for d in [x for x in store.list_days() if x < day][-n:]:
        m = store.manifest(d)
        if m is None:  # removed since the listing
            continue
        try:
            stats = json.loads(get_bytes(cfg, stats_key(prefix, d)))
        except (StorageError, ValueError):
            stats = None
        if isinstance(stats, dict) and stats.get("digest") == m.digest:
            out.append(stats)
        else:
            out.append({"day": d, "rows": m.rows})
    return out


def _publish(cfg: ExfmConfig, prefix: str, res: GateResult, log: Log,
             digest: str | None = None) -> GateResult:
    """Upload the Data Docs under the day, store the stats of a passing day (keyed to the
    manifest ``digest`` of the rows it judged), log the reason."""
    import json

    from exfm.storage.layout import stats_key
    from exfm.storage.s3 import put_bytes

    if cfg.validation.upload_docs and res.local_docs:
        res.docs_url = upload_docs(cfg, prefix, res.day, Path(res.local_docs[len("file://"):]))
    if res.ok:
        stats = dict(res.stats, day=res.day, digest=digest,
                     at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        put_bytes(cfg, stats_key(prefix, res.day), json.dumps(stats, sort_keys=True).encode())
    log(res.reason)
    return res


# SigV4's longest presigned URL: a failing day's Data Docs link opens for a week.
DOCS_LINK_TTL_S = 7 * 24 * 3600


def upload_docs(cfg: ExfmConfig, prefix: str, day: str, page: Path) -> str:
    """Upload the local Data Docs site (shared pages + this run's validation page) under
    ``<prefix>/day=D/_gx_docs/``; returns a SigV4 presigned URL of this run's page that a browser
    opens without credentials for :data:`DOCS_LINK_TTL_S` (the S3 endpoint serves signed requests
    only). The uploaded pages' relative links to one another (index, expectation suite, this
    run's page, favicon) are rewritten to presigned URLs too, so the site navigates the same way
    from the link; links to another day's run pages (not uploaded under this day) stay relative."""
    from urllib.parse import unquote

    from exfm.storage.layout import docs_prefix
    from exfm.storage.s3 import s3_client

    page = Path(unquote(str(page)))
    site = next(p for p in page.parents if p.name == "local_site")
    run_dir = page.parent.relative_to(site).as_posix()
    client = s3_client(cfg)
    bucket, base = cfg.storage.bucket, docs_prefix(prefix, day)
    files = {}
    for f in sorted(site.rglob("*")):
        rel = f.relative_to(site).as_posix()
        if f.is_file() and not (rel.startswith("validations/") and not rel.startswith(run_dir)):
            files[rel] = f
    signer = _sigv4_client(cfg)
    signed = {rel: signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": base + rel}, ExpiresIn=DOCS_LINK_TTL_S)
        for rel in files}
    for rel, f in files.items():
        body = f.read_bytes()
        if rel.endswith(".html"):
            body = sign_links(body.decode("utf-8"), rel, signed).encode("utf-8")
        client.put_object(Bucket=bucket, Key=base + rel, Body=body,
                          ContentType=_content_type(rel))
    return signed[page.relative_to(site).as_posix()]


def _sigv4_client(cfg: ExfmConfig):
    """A boto3 S3 client that presigns with SigV4 (botocore's default for a custom endpoint is
    the legacy SigV2 query form, which not every S3 server accepts)."""
    import boto3
    from botocore.config import Config

    access, secret = cfg.s3_credentials()
    return boto3.client("s3", endpoint_url=cfg.s3_endpoint, region_name=cfg.storage.region,
                        aws_access_key_id=access, aws_secret_access_key=secret,
                        config=Config(signature_version="s3v4",
                                      s3={"addressing_style": "path"}))


_QUOTED = re.compile(
    r"""(?P<attr>\b(?:href|src)=)?(?P<q>["'])(?P<url>[\w.~%-][\w./~%-]*)(?P=q)""")


def sign_links(text: str, rel: str, signed: dict[str, str]) -> str:
    """``text`` (the page at site path ``rel``) with each quoted relative reference that resolves
    to a key of ``signed`` replaced by its signed URL: HTML-escaped in an ``href=``/``src=``
    attribute, as is in a script string (Data Docs' index builds its row links in JavaScript).

    >>> signed = {"index.html": "http://s/i?X=1&Y=2", "v/a/b.html": "http://s/b?Z=3&W=4"}
    >>> sign_links('<a href="../index.html">i</a> row = {"p": "a/b.html"}', "v/p.html", signed)
    '<a href="http://s/i?X=1&amp;Y=2">i</a> row = {"p": "http://s/b?Z=3&W=4"}'
    """
    import html
    import posixpath

    here = posixpath.dirname(rel)

    def repl(m):
        target = posixpath.normpath(posixpath.join(here, m["url"]))
        url = signed.get(target)
        if url is None:
            return m[0]
        q = m["q"]
        return f"{m['attr'] or ''}{q}{html.escape(url, quote=True) if m['attr'] else url}{q}"

    return _QUOTED.sub(repl, text)


def _content_type(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"

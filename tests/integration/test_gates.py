"""Data gates on the real SeaweedFS: trailing-day statistics stored beside committed days, a
collapse against them fails, the Data Docs are uploaded under the day and the reason links them."""

from __future__ import annotations

import html
import json
import re
from urllib.error import HTTPError
from urllib.parse import unquote, urlsplit
from urllib.request import urlopen

import numpy as np
import pyarrow as pa
import pytest

from exfm.data.schema import DatasetSchema, SparseField
from exfm.storage.layout import AUGMENTED, RAW, docs_prefix, stats_key
from exfm.storage.partitions import PartitionStore, put_remote_schema
from exfm.storage.s3 import ensure_bucket, s3_client
from exfm.validation import GateFailed, gate_augmented, gate_raw

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(name="t", timestamp="ts", request_id="rid", labels=["click"],
                       sparse=[SparseField(name="user_id", vocab=50)], dense=["price"])
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def _raw(day: str, n: int, seed: int) -> pa.Table:
    import datetime as dt

    t0 = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp())
    rng = np.random.default_rng(seed)
    return pa.table({
        "ts": pa.array(t0 + np.sort(rng.integers(0, 86400, n)), pa.int64()),
        "rid": pa.array(np.arange(n) + seed * 100_000, pa.int64()),
        "click": pa.array((rng.random(n) < 0.3).astype(np.int64)),
        "user_id": pa.array(rng.integers(0, 50, n), pa.int64()),
        "price": pa.array(rng.random(n), pa.float32()),
    })


def _open(url: str) -> str:
    with urlopen(url, timeout=10) as r:  # plain urllib: no credentials
        assert r.status == 200 and r.headers["Content-Type"] == "text/html"
        return r.read().decode()


def _aug(t: pa.Table, mean: float) -> pa.Table:
    p = np.clip(np.random.default_rng(0).normal(mean, 0.02, t.num_rows), 0, 1)
    return (t.append_column("fm_pred_click", pa.array(p, pa.float32()))
             .append_column("fm_version", pa.array(["3"] * t.num_rows)))


@pytest.fixture(scope="module")
def s3_cfg(tmp_path_factory):
    from tests.integration.conftest import _start, make_test_config, stack_env
    from exfm.stack import stack_down

    cfg = make_test_config(tmp_path_factory.mktemp("gates"))
    _start(cfg, ["s3"])
    try:
        with stack_env(cfg):
            ensure_bucket(cfg)
            put_remote_schema(cfg, SCHEMA.to_yaml())
            yield cfg
    finally:
        stack_down(cfg, ["s3"])


def test_raw_gate_uses_trailing_stats_and_uploads_docs(s3_cfg):
    cfg, raw, logs = s3_cfg, PartitionStore(s3_cfg, RAW), []
    for i, day in enumerate(DAYS[:3]):
        raw.write_day(day, _raw(day, 1000, i))
        res = gate_raw(cfg, day, log=logs.append)
        assert res.ok, res.reason
        stats = json.loads(s3_client(cfg).get_object(
            Bucket=cfg.storage.bucket, Key=stats_key(RAW, day))["Body"].read())
        assert stats["rows"] == 1000 and 0.2 < stats["label_rate"]["click"] < 0.4
    assert logs[-1].startswith("raw gate passed for day 2026-03-03")

    # day 4 collapses to 10% of the trailing days' rows: fails on that rule, names the band
    raw.write_day(DAYS[3], _raw(DAYS[3], 100, 9))
    res = gate_raw(cfg, DAYS[3], log=logs.append)
    assert not res.ok
    assert [f.rule for f in res.failures] == ["row count within the trailing band"]
    assert "observed 100" in res.reason and "[500, 2000] rows" in res.reason
    # the Data Docs page is in the bucket under the day, at the URL the reason names
    prefix = f"{cfg.s3_endpoint}/{cfg.storage.bucket}/{docs_prefix(RAW, DAYS[3])}"
    url = urlsplit(res.docs_url)
    assert unquote(res.docs_url).startswith(prefix) and url.path.endswith(".html")
    assert "X-Amz-Signature=" in url.query and "X-Amz-Expires=604800" in url.query  # SigV4
    assert res.docs_url in res.reason and res.local_docs in res.reason
    key = unquote(url.path)[len(f"/{cfg.storage.bucket}/"):]
    obj = s3_client(cfg).get_object(Bucket=cfg.storage.bucket, Key=key)
    assert obj["ContentType"] == "text/html" and b"exfm_raw_day" in obj["Body"].read()
    # ... and it opens from the link alone, as a browser would: no credentials, no AWS client
    page = _open(res.docs_url)
    assert "exfm_raw_day" in page
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))
    assert "Status: Failed" in text and "equal to 500 and less than or equal to 2000 rows" in text
    # the endpoint refuses the same object unsigned: the link's signature is what opens it
    with pytest.raises(HTTPError) as e:
        _open(f"{url.scheme}://{url.netloc}{url.path}")
    assert e.value.code == 403
    # the page's links to the site's index and the suite's page open the same way
    links = dict((t, next(u for u in re.findall(r'href="([^"]+)"', page)
                          if urlsplit(html.unescape(u)).path.endswith(t)))
                 for t in ("/_gx_docs/index.html", "/_gx_docs/expectations/exfm_raw_day.html"))
    assert "Expectation Suites" in _open(html.unescape(links["/_gx_docs/index.html"]))
    assert "exfm_raw_day" in _open(
        html.unescape(links["/_gx_docs/expectations/exfm_raw_day.html"]))
    listed = s3_client(cfg).list_objects_v2(Bucket=cfg.storage.bucket,
                                            Prefix=docs_prefix(RAW, DAYS[3]))
    names = [o["Key"] for o in listed.get("Contents", [])]
    assert any(n.endswith("/index.html") for n in names)
    assert not any("/validations/" in n and f"/{DAYS[0]}/" in n for n in names)  # this day only
    # a failing day stores no stats: it does not drag the band of the days after it
    assert "Contents" not in s3_client(cfg).list_objects_v2(
        Bucket=cfg.storage.bucket, Prefix=stats_key(RAW, DAYS[3]))
    with pytest.raises(GateFailed, match="row count within the trailing band"):
        res.raise_if_failed()
    # the CLI: the same gate, its reason printed, a non-zero exit
    from click.testing import CliRunner

    from exfm.commands.data import data

    out = CliRunner().invoke(data, ["gate", "--day", DAYS[3]])
    assert out.exit_code != 0 and "row count within the trailing band" in out.output
    assert CliRunner().invoke(data, ["gate", "--day", DAYS[2]]).exit_code == 0


def test_augmented_gate_catches_a_mean_collapse(s3_cfg):
    cfg, raw, aug = s3_cfg, PartitionStore(s3_cfg, RAW), PartitionStore(s3_cfg, AUGMENTED)
    for i, day in enumerate(DAYS[:2]):
        if raw.manifest(day) is None:
            raw.write_day(day, _raw(day, 1000, i))
        aug.write_day(day, _aug(raw.read_day(day), 0.3), fm_version="3")
        assert gate_augmented(cfg, day, log=lambda m: None).ok
    day = DAYS[2]
    aug.write_day(day, _aug(raw.read_day(day), 0.01), fm_version="3")
    res = gate_augmented(cfg, day, log=lambda m: None)
    assert [f.rule for f in res.failures] == ["FM mean prediction within the trailing band"]
    assert res.failures[0].column == "fm_pred_click"


def test_a_relanded_day_is_judged_by_its_current_rows_not_its_stale_stats(s3_cfg):
    """A day replaced after its gate passed keeps the old ``_stats.json``: the trailing band
    must read the rows committed now (the stats are keyed to the manifest digest)."""
    from exfm.validation.gates import trailing_stats

    # its own bucket: the other tests' days would be trailing days of these
    cfg = s3_cfg.model_copy(update={"storage": s3_cfg.storage.model_copy(
        update={"bucket": "exfm-reland"})})
    ensure_bucket(cfg)
    put_remote_schema(cfg, SCHEMA.to_yaml())
    raw = PartitionStore(cfg, RAW)
    days = ["2026-04-01", "2026-04-02", "2026-04-03", "2026-04-04"]
    for i, day in enumerate(days[:3]):
        m = raw.write_day(day, _raw(day, 1000, 20 + i))
        assert gate_raw(cfg, day, log=lambda s: None).ok
        stats = json.loads(s3_client(cfg).get_object(
            Bucket=cfg.storage.bucket, Key=stats_key(RAW, day))["Body"].read())
        assert stats["digest"] == m.digest
    # day 3 re-landed with 3x the rows; its passing gate's stats (1000 rows) are still there
    raw.write_day(days[2], _raw(days[2], 3000, 30))
    stale = json.loads(s3_client(cfg).get_object(
        Bucket=cfg.storage.bucket, Key=stats_key(RAW, days[2]))["Body"].read())
    assert stale["rows"] == 1000
    trailing = trailing_stats(cfg, RAW, days[3], 3)
    assert [t["rows"] for t in trailing] == [1000, 1000, 3000]
    assert "label_rate" not in trailing[-1]  # nothing of the replaced rows survives
    # day 4 with 2600 rows: within the band of the rows that exist (mean 1667 -> [833, 3333]);
    # against the stale stats (mean 1000 -> [500, 2000]) it would fail
    raw.write_day(days[3], _raw(days[3], 2600, 31))
    res = gate_raw(cfg, days[3], log=lambda s: None)
    assert res.ok, res.reason
    # the re-landed day's own gate fails (3000 vs [500, 2000]): its stale stats stay ignored
    assert not gate_raw(cfg, days[2], log=lambda s: None).ok
    assert trailing_stats(cfg, RAW, "2026-04-05", 3)[1] == {"day": days[2], "rows": 3000}

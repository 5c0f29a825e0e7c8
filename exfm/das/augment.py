"""Batch augmentation: infer the leased FM once per row of a day and commit ``augmented/day=d``.

Ray Data reads the committed parts of the day (the manifest names them); a class-based actor
pool runs the FM. Each actor is a full DAS worker: an updater (polls the registry, CAS-moves the
lease) and a loader (loads the leased snapshot in the background and swaps it in once fully
loaded), so no worker is special. The driver commits the result through :class:`PartitionStore`
(parts, then the manifest). Each row gets one ``fm_pred_<task>`` column per FM task, the
``fm_version`` that produced it and ``fm_age_days``, that version's freshness gap (the day minus
the FM's training day: the staleness signal the Student Adapter reads, the same column the offline
protocol writes); however many VMs read the day, the FM runs once per row (VMs read slices of this
one partition).

Two ways a day lands:
- joined: ``raw/day=d`` holds features and labels (``exfm data ingest``);
- split (late labels): ``raw/features/day=d`` lands first, ``raw/labels/day=l`` later (keyed by
  the schema's request id; ``l`` is the day the label arrived, d <= l <= d + label_window_days).
  DAS infers on the features as soon as they land (``das/pending/day=d``) and commits
  ``augmented/day=d`` when the label window has closed; rows whose label never arrived are
  dropped and counted.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from exfm.config import ExfmConfig
from exfm.das.gc import collect_snapshots
from exfm.das.snapshots import SnapshotLoader, SnapshotUpdater
from exfm.das.store import lease_store
from exfm.data.batches import FM_AGE_COLUMN
from exfm.registry.chain import fm_day_of
from exfm.registry.mlflow_registry import fm_model_name, load_fm
from exfm.storage.layout import (AUGMENTED, FEATURES, LABELS, PENDING, RAW, VERSION_COL,
                                 fm_pred_column, is_fm_column)
from exfm.storage.partitions import Manifest, PartitionStore, load_remote_schema

__all__ = ["AUGMENTED", "FEATURES", "LABELS", "PENDING", "RAW", "VERSION_COL", "AugmentError",
           "AugmentResult", "FMPredictor", "augment_day", "augment_split_day", "infer_partition",
           "join_labels", "label_days", "lease_store", "update_lease"]


class AugmentError(RuntimeError):
    """The augmentation of a day could not run; nothing was committed."""


def registry_latest(cfg: ExfmConfig, day: str):
    """The updater's view of the SPD: newest FM version trained *before* ``day`` and not refused
    by FM blessing (a backfilled day sees the teacher it would have seen), as ``(version, uri)``
    or None."""
    from exfm.registry.chain import das_fm_version

    def latest():
        v = das_fm_version(cfg, day)
        return None if v is None else (v, f"models:/{fm_model_name(cfg)}/{v}")
    return latest


def update_lease(cfg: ExfmConfig, day: str) -> str:
    """One updater poll for ``day``: 'set', 'lost', 'extended' or 'none'."""
    return SnapshotUpdater(lease_store(cfg), fm_model_name(cfg), registry_latest(cfg, day)).poll_once()


FORWARD_ROWS_COL = "_exfm_fm_forward_rows"  # internal, dropped by infer_partition
FORWARD_ROWS_META = b"exfm.fm_forward_rows"  # infer_partition's table metadata: the FM's count


def fm_forward_rows(table: pa.Table) -> int | None:
    """Rows that went through the FM's forward for ``table`` (``infer_partition``'s count)."""
    v = (table.schema.metadata or {}).get(FORWARD_ROWS_META)
    return int(v) if v is not None else None


class FMPredictor:
    """Ray Data actor = one DAS worker: ``pa.Table`` batch -> the batch + ``fm_pred_<task>`` +
    ``fm_version``.

    A background thread polls the registry (updater) and the lease (loader) every
    ``cfg.das.refresh_s``; a new snapshot loads beside the old one, which keeps serving until the
    swap. A batch reads the served ``(version, model)`` pair once, so all its rows carry one
    version. ``batch_delay_s`` slows each batch (tests of a switch mid-job).
    """

    def __init__(self, cfg_dump: dict, day: str, device: str = "cpu",
                 batch_delay_s: float = 0.0, torch_threads: int = 1, pinned: str | None = None):
        import torch

        torch.set_num_threads(torch_threads)
        self.cfg = ExfmConfig.model_validate(cfg_dump)
        self.device, self.batch_delay_s = device, batch_delay_s
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        store = lease_store(self.cfg)
        fm_name = fm_model_name(self.cfg)
        self.updater = SnapshotUpdater(store, fm_name, registry_latest(self.cfg, day))
        self.loader = SnapshotLoader(store, fm_name, self._load, worker=self.worker)
        self._stop = threading.Event()
        if pinned is not None:  # a day's snapshot fixed by its date: every row, every re-run
            self.loader.pin(pinned, f"models:/{fm_name}/{pinned}")
            return
        self.loader.refresh()  # the first snapshot loads before the first batch
        self.loader.current()  # fail now, with a clear message, if nothing is leased
        threading.Thread(target=self._refresh_loop, daemon=True, name="das-refresh").start()

    def _load(self, version: str, uri: str):
        model, _v = load_fm(self.cfg, version)
        model.register_forward_hook(self._count)  # rows actually through the FM's forward
        return model.to(self.device)

    def _count(self, _module, inputs, _output) -> None:
        self.forward_rows = getattr(self, "forward_rows", 0) + int(inputs[0]["sparse"].shape[0])

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.cfg.das.refresh_s):
            try:
                self.updater.poll_once()
                self.loader.refresh()
            except Exception as e:  # noqa: BLE001 - keep serving the old snapshot
                print(f"DAS worker {self.worker}: refresh failed, still serving "
                      f"v{self.loader.current()[0]}: {e}", file=sys.stderr, flush=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from exfm.models.snapshot import predict_table

        version, model = self.loader.current()  # one (version, model) pair for the whole batch
        if self.batch_delay_s:
            time.sleep(self.batch_delay_s)
        import torch

        from exfm.models.build import unwrap
        from exfm.train.trainer import autocast

        before = getattr(self, "forward_rows", 0)
        # bf16 on CUDA (models.amp) and on CPUs that compute it natively (models.cpu_amp): the
        # DAS's config decides, whatever the snapshot trained with (FoundationModel's inference)
        unwrap(model).hp["cpu_amp"] = self.cfg.models.cpu_amp
        with autocast(torch.device(self.device), self.cfg.models.amp, cpu=self.cfg.models.cpu_amp):
            preds = predict_table(model, batch, device=self.device)
        batch = batch.append_column(FORWARD_ROWS_COL, pa.array(
            [self.forward_rows - before] + [0] * (batch.num_rows - 1), pa.int64())[:batch.num_rows])
        for i, task in enumerate(model.tasks):
            batch = batch.append_column(fm_pred_column(task), pa.array(preds[:, i], pa.float32()))
        return batch.append_column(VERSION_COL, pa.array([version] * batch.num_rows, pa.string()))

    def __del__(self):
        self._stop.set()


def infer_partition(cfg: ExfmConfig, m: Manifest, day: str, batch_delay_s: float = 0.0,
                    pinned: str | None = None) -> pa.Table:
    """Run the actor pool over the parts ``m`` names; rows come back in their stored order."""
    import ray

    from exfm.compute.ingest import read_parts

    ds = read_parts(cfg, list(m.parts), num_blocks=max(len(m.parts), 2))
    gpu = cfg.ray.use_gpu
    out = ds.map_batches(
        FMPredictor,
        fn_constructor_kwargs={"cfg_dump": cfg.dump_for_children(mode="python"), "day": day,
                               "device": "cuda" if gpu else "cpu",
                               "batch_delay_s": batch_delay_s, "pinned": pinned},
        batch_format="pyarrow", batch_size=cfg.das.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.das.max_actors),
        num_gpus=1 if gpu else 0, num_cpus=1)
    tables = [ray.get(ref) for ref in out.to_arrow_refs()]
    table = pa.concat_tables(tables) if tables else pa.table({})
    if FORWARD_ROWS_COL in table.column_names:  # per batch: rows the FM's forward saw
        forward = int(pc.sum(table.column(FORWARD_ROWS_COL)).as_py() or 0)
        table = table.drop_columns([FORWARD_ROWS_COL]).replace_schema_metadata(
            {**(table.schema.metadata or {}), FORWARD_ROWS_META: str(forward)})
    if table.num_rows != m.rows:
        raise AugmentError(f"DAS {day}: inferred {table.num_rows} rows of {m.rows}; not committed")
    if table.num_rows and table.column(VERSION_COL).null_count:
        raise AugmentError(f"DAS {day}: rows without an FM version; not committed")
    return table


@dataclass
class AugmentResult:
    """What one DAS run did (also the ``EXFM_RESULT`` line of ``ray_jobs.das_infer``)."""

    day: str
    status: str  # committed | pending_labels
    rows: int
    fm_version: str | None
    fm_day: str | None
    freshness_gap_days: int | None
    seconds: float
    rows_per_s: float
    uri: str
    digest: str | None
    versions_seen: list[str] = field(default_factory=list)
    inferred_rows: int = 0
    dropped_unlabeled: int = 0
    collected_versions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _day_gap(a: str, b: str) -> int:
    return (date.fromisoformat(a) - date.fromisoformat(b)).days


def _lease_for(cfg: ExfmConfig, day: str, progress: Callable[[str], None]) -> tuple[str, str]:
    """The FM version DAS of ``day`` infers with, fixed by the date: the newest snapshot trained on
    a day < ``day`` (:func:`exfm.registry.chain.das_fm_version`). The updater still moves the
    live lease (its serving role); a replay whose lease has moved past ``day`` pins its snapshot.
    Returns ``(version, how)``, ``how`` = ``lease`` or ``pinned``."""
    from exfm.registry.chain import das_fm_version

    fm = fm_model_name(cfg)
    want = das_fm_version(cfg, day)
    if want is None:
        raise AugmentError(f"no FM snapshot trained before {day} in the registry "
                           f"({cfg.tracking_uri}, model {fm}): train one first")
    outcome = update_lease(cfg, day)
    lease = lease_store(cfg).get(fm)
    how = "lease" if lease is not None and lease.version == want else "pinned"
    progress(f"DAS {day}: updater {outcome}; lease {fm} "
             f"v{lease.version if lease else '-'}; inferring with v{want} ({how}: newest FM "
             f"trained before {day})")
    return want, how


def with_fm_age(table: pa.Table, day: str, fm_days: dict[str, str | None]) -> pa.Table:
    """``table`` plus ``fm_age_days`` (float32): per row, days between ``day`` and the training
    day of the FM version in its ``fm_version`` (``fm_days``: version -> that day, from the
    registry's ``day`` tag). A version with no known day gives a null (the trainer reads a null
    as a daily FM, gap 1). Per row, since rows of one day may come from different snapshots.

    >>> t = pa.table({"fm_version": ["3", "3", "4"]})
    >>> with_fm_age(t, "2026-01-05", {"3": "2026-01-02", "4": "2026-01-04"}).column(
    ...     "fm_age_days").to_pylist()
    [3.0, 3.0, 1.0]
    """
    gap = {v: None if d is None else float(_day_gap(day, d)) for v, d in fm_days.items()}
    versions = table.column(VERSION_COL).to_pylist() if table.num_rows else []
    missing = sorted({v for v in versions if v not in gap} - {None})
    if missing:
        raise AugmentError(f"DAS {day}: no training day for FM version(s) {missing}")
    col = pa.array([None if v is None else gap[v] for v in versions], pa.float32())
    if FM_AGE_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(FM_AGE_COLUMN), FM_AGE_COLUMN, col)
    return table.append_column(FM_AGE_COLUMN, col)


def _infer(cfg: ExfmConfig, src: PartitionStore, dst: PartitionStore, day: str, producer: str,
           progress: Callable[[str], None], batch_delay_s: float) -> tuple[Manifest, Manifest, float]:
    m = src.manifest(day)
    if m is None:
        raise AugmentError(f"{src.uri(day)}: no committed partition for {day}")
    src.check_parts(m)  # a corrupt input fails here, by name, before any job starts
    pinned, how = _lease_for(cfg, day, progress)
    t0 = time.time()
    table = infer_partition(cfg, m, day, batch_delay_s=batch_delay_s, pinned=pinned)
    secs = time.time() - t0
    versions = sorted(set(table.column(VERSION_COL).to_pylist())) if table.num_rows else []
    fm_version = max(versions, key=int) if versions else None
    table = with_fm_age(table, day, {v: fm_day_of(cfg, v) for v in versions})
    progress(f"DAS {day}: inferred {table.num_rows} rows in {secs:.1f}s "
             f"({table.num_rows / max(secs, 1e-9):,.0f} rows/s), FM version(s) {versions}")
    out = dst.write_day(day, table, producer=producer, fm_version=fm_version,
                        extra={"fm_versions": versions,
                               "fm_version_ranges": version_ranges(table.column(VERSION_COL)),
                               "source": src.uri(day),
                               "source_digest": m.digest, "fm_choice": how,
                               "fm_rule": f"newest FM trained before {day}"})
    return m, out, secs


def version_ranges(column) -> list[list]:
    """Row lineage for the manifest: ``[[first_row, end_row, fm_version], ...]`` over the rows in
    write order (end exclusive), one entry per run of rows inferred by one FM version. A snapshot
    switch mid-job gives several entries; ``fm_version`` on the manifest is only the newest."""
    out: list[list] = []
    for i, v in enumerate(column.to_pylist()):
        if out and out[-1][2] == v:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1, v])
    return out


def _result(cfg: ExfmConfig, day: str, status: str, man: Manifest | None, uri: str, secs: float,
            inferred: int, dropped: int = 0) -> AugmentResult:
    fm_version = man.fm_version if man else None
    fm_day = fm_day_of(cfg, fm_version)
    rows = man.rows if man else 0
    return AugmentResult(day=day, status=status, rows=rows, fm_version=fm_version, fm_day=fm_day,
                         freshness_gap_days=_day_gap(day, fm_day) if fm_day else None,
                         seconds=secs, rows_per_s=inferred / max(secs, 1e-9), uri=uri,
                         digest=man.digest if man else None,
                         versions_seen=list(man.extra.get("fm_versions", [])) if man else [],
                         inferred_rows=inferred, dropped_unlabeled=dropped)


def augment_day(cfg: ExfmConfig, day: str, progress: Callable[[str], None] = print,
                producer: str = "das", batch_delay_s: float = 0.0, gc: bool = True) -> AugmentResult:
    """Augment ``day``: infer the leased FM (joined ``raw/day=d``, or split features + late labels)
    and commit ``augmented/day=d``. Idempotent: a re-run replaces the day whole.

    Raises:
        AugmentError: no raw partition, no FM snapshot before ``day``, or a failed job (nothing
            committed). StorageError / RegistryError name the object or version at fault.
    """
    raw, features = PartitionStore(cfg, RAW), PartitionStore(cfg, FEATURES)
    aug = PartitionStore(cfg, AUGMENTED)
    if raw.manifest(day) is not None:
        _m, out, secs = _infer(cfg, raw, aug, day, producer, progress, batch_delay_s)
        res = _result(cfg, day, "committed", out, aug.uri(day), secs, out.rows)
    elif features.manifest(day) is not None:
        res = augment_split_day(cfg, day, progress, producer, batch_delay_s)
    else:
        raise AugmentError(f"{raw.uri(day)} and {features.uri(day)}: no committed partition for "
                           f"{day} (land it first: `exfm data ingest`)")
    if gc:
        res.collected_versions = collect_snapshots(cfg)
    if res.status == "committed":
        progress(f"DAS {day}: committed {res.rows} rows -> {res.uri} (FM v{res.fm_version}, "
                 f"freshness gap {res.freshness_gap_days} day(s), digest {res.digest[:12]})")
    return res


# -- late labels ------------------------------------------------------------------------------
def augment_split_day(cfg: ExfmConfig, day: str, progress: Callable[[str], None] = print,
                      producer: str = "das", batch_delay_s: float = 0.0,
                      final: bool = False) -> AugmentResult:
    """Split mode: infer ``raw/features/day=d`` once (skipped if already inferred for these
    features), then :func:`join_labels`."""
    features, pending = PartitionStore(cfg, FEATURES), PartitionStore(cfg, PENDING)
    fm = features.manifest(day)
    pm = pending.manifest(day)
    secs, inferred = 0.0, 0
    if fm is None:
        raise AugmentError(f"{features.uri(day)}: no committed features for {day}")
    if pm is None or pm.extra.get("source_digest") != fm.digest:
        _m, pm, secs = _infer(cfg, features, pending, day, producer, progress, batch_delay_s)
        inferred = pm.rows
    else:
        progress(f"DAS {day}: features already inferred (FM v{pm.fm_version}); joining labels")
    return join_labels(cfg, day, progress, producer, final=final, _secs=secs, _inferred=inferred)


def label_days(cfg: ExfmConfig, day: str) -> list[str]:
    d = date.fromisoformat(day)
    return [(d + timedelta(days=k)).isoformat() for k in range(cfg.data.label_window_days + 1)]


def join_labels(cfg: ExfmConfig, day: str, progress: Callable[[str], None] = print,
                producer: str = "das", final: bool = False, _secs: float = 0.0,
                _inferred: int = 0) -> AugmentResult:
    """Join the labels that arrived for ``day``'s inferred features (by request id) and commit
    ``augmented/day=d`` once the window closed (the labels of day d + label_window_days have
    landed, or ``final``); rows still without a label are then dropped and counted."""
    pending, labels, aug = (PartitionStore(cfg, PENDING), PartitionStore(cfg, LABELS),
                            PartitionStore(cfg, AUGMENTED))
    pm = pending.manifest(day)
    if pm is None:
        raise AugmentError(f"{pending.uri(day)}: features of {day} not inferred yet")
    schema = load_remote_schema(cfg)
    rid = schema.request_id
    if rid is None:
        raise AugmentError(f"dataset '{schema.name}': late labels need a request_id column in "
                           "schema.yaml (labels are joined to features by it)")
    window = label_days(cfg, day)
    landed = [d for d in window if labels.manifest(d) is not None]
    closed = final or window[-1] in landed
    table = pending.read_day(day)
    table = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    if landed:
        lab = pa.concat_tables([labels.read_day(d, columns=[rid] + schema.labels) for d in landed],
                               promote_options="default")
        lab = lab.append_column("__li", pa.array(range(lab.num_rows), pa.int64()))
        first = lab.group_by(rid).aggregate([("__li", "min")]).column("__li_min")
        lab = lab.take(pc.sort_indices(first)).drop_columns(["__li"])  # first label per request
    else:
        lab = pa.table({rid: pa.array([], table.schema.field(rid).type),
                        **{t: pa.array([], pa.int64()) for t in schema.labels}})
    table = table.drop_columns([c for c in schema.labels if c in table.column_names])
    # join keys only (pyarrow's join cannot carry list columns such as behaviour sequences),
    # then attach the labels to the rows in their arrival order
    keyed = table.select([rid, "__row"]).join(lab, keys=rid, join_type="left outer")
    keyed = keyed.take(pc.sort_indices(keyed.column("__row")))
    joined = table.drop_columns(["__row"])
    for t in schema.labels:
        joined = joined.append_column(t, keyed.column(t))
    has_label = pc.is_valid(joined.column(schema.labels[0]))
    labeled = int(pc.sum(has_label).as_py() or 0)
    dropped = joined.num_rows - labeled
    if not closed:
        progress(f"DAS {day}: {labeled}/{joined.num_rows} rows labeled so far (label days landed "
                 f"{landed} of {window}); augmented/{day} commits when the window closes")
        res = _result(cfg, day, "pending_labels", None, aug.uri(day), _secs, _inferred, dropped)
        res.rows, res.fm_version = labeled, pm.fm_version
        return res
    out_cols = [c for c in joined.column_names if c not in schema.labels]
    kept = joined.filter(has_label)
    # the labelled table in the column order of a joined day: features, labels, FM columns
    fm_cols = [c for c in out_cols if is_fm_column(c) or c == FM_AGE_COLUMN]
    base = [c for c in out_cols if c not in fm_cols]
    kept = kept.select(base + schema.labels + fm_cols)
    kept = kept.cast(pa.schema([f.with_type(pa.int64()) if f.name in schema.labels else f
                                for f in kept.schema]))
    man = aug.write_day(day, kept, producer=producer, fm_version=pm.fm_version,
                        extra={**pm.extra, "label_days": landed, "dropped_unlabeled": dropped,
                               "pending_digest": pm.digest})
    if dropped:
        progress(f"DAS {day}: dropped {dropped} row(s) whose label never arrived within "
                 f"{cfg.data.label_window_days} day(s)")
    return _result(cfg, day, "committed", man, aug.uri(day), _secs, _inferred, dropped)

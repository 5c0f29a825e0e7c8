"""The VM promotion gate on the MLflow registry: ``@challenger``, ``@champion``, ``@champion_prev``.

- A new VM version gets ``@challenger`` (:func:`set_challenger`, at registration).
- Day ``d``, before the VM trains on it: :func:`gate_vm` scores the newest version trained before
  ``d`` (the challenger of day ``d``), the ``@champion`` and the control arm's newest version on
  the VM's slice of day ``d`` (rows none of them has seen), and moves ``@champion`` to the
  challenger only when :func:`exfm.promotion.decision.decide` says so; the champion it replaces
  becomes ``@champion_prev``. What it judges is fixed by the day, never "the latest", so a re-run
  of the day returns the decision recorded then (idempotent) and the task may run before or after
  the day's training.
- Every decision is recorded on the judged version as tags ``gate.*`` (both figures, the reason,
  the versions compared) plus a ``gate.history`` list; :func:`promote` and :func:`rollback` (the
  on-call person's ``exfm promote`` / ``exfm rollback``) record theirs the same way.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from typing import Callable

from exfm.config import ExfmConfig
from exfm.promotion.decision import NO_DECISION, REFUSED, TAG_PREFIX, Decision, decide

CHAMPION, CHALLENGER, CHAMPION_PREV = "champion", "challenger", "champion_prev"
HISTORY_TAG = f"{TAG_PREFIX}history"
HISTORY_KEEP = 10


class GateError(RuntimeError):
    """A promotion or rollback cannot be done; the message names the model and alias."""


def alias_version(client, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - MLflow raises RESOURCE_DOES_NOT_EXIST for a free alias
        return None


def set_challenger(cfg: ExfmConfig, registered: str, version: str) -> None:
    """Point ``registered@challenger`` at the freshly registered ``version``."""
    from exfm.registry.mlflow_registry import connect

    connect(cfg).set_registered_model_alias(registered, CHALLENGER, str(version))


def day_slice(cfg: ExfmConfig, day: str, vm_name: str):
    """The VM's slice of day ``day``: ``augmented/`` if committed, else ``raw/``, as a
    :class:`~exfm.data.stream.DayStream` (read in chunks, never the whole day at once)."""
    from exfm.data.slices import vm_slice_filter
    from exfm.jobs.vm_day import vm_config
    from exfm.storage.layout import AUGMENTED, RAW
    from exfm.storage.partitions import DayNotFound, PartitionStore, load_remote_schema

    vm = vm_config(cfg, vm_name)
    for prefix in (AUGMENTED, RAW):
        store = PartitionStore(cfg, prefix)
        if store.manifest(day) is not None:
            return store.stream_day(day, filter=vm_slice_filter(vm, load_remote_schema(cfg)))
    raise DayNotFound(f"{PartitionStore(cfg, RAW).uri(day)}: no committed partition for {day}")


def _scores(cfg: ExfmConfig, versions: list[tuple[str, str | None]], rows, task: str
            ) -> list[dict | None]:
    """Each ``(registered name, version)``'s metrics on ``rows`` (a pa.Table or a DayStream),
    all models in one read of the rows; None where the version is None."""
    import pyarrow as pa

    from exfm.registry.mlflow_registry import load_snapshot_version
    from exfm.train.trainer import evaluate_many

    models = {i: load_snapshot_version(cfg, name, v)[0]
              for i, (name, v) in enumerate(versions) if v is not None}
    chunks = [rows] if isinstance(rows, pa.Table) else rows.chunks(cfg.models.stream_chunk_rows)
    got = dict(zip(models, evaluate_many(list(models.values()), chunks, task=task)))
    return [got.get(i) for i in range(len(versions))]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _record(client, name: str, version: str, d: Decision) -> None:
    """Tag ``version`` with the decision and append it to its ``gate.history``."""
    tags = client.get_model_version(name, version).tags
    history = json.loads(tags.get(HISTORY_TAG, "[]"))
    history.append({"at": _now(), "day": d.day, "decision": d.decision, "by": d.by,
                    "reason": d.reason[:300]})
    for k, v in {**d.tags(), HISTORY_TAG: json.dumps(history[-HISTORY_KEEP:])}.items():
        client.set_model_version_tag(name, version, k, v)


def _rolled_back(tags: dict[str, str]) -> bool:
    """Whether on call rolled this version back (``exfm rollback``) and has not promoted it by
    hand since."""
    rolled = tags.get("rollback.at")
    if not rolled:
        return False
    manual = [datetime.fromisoformat(h["at"]) for h in json.loads(tags.get(HISTORY_TAG, "[]"))
              if h.get("decision") == "manual_promote" and h.get("at")]
    return not manual or max(manual) < datetime.fromisoformat(rolled)


def _make_champion(client, name: str, new: str, old: str | None) -> None:
    if old is not None and old != new:
        client.set_registered_model_alias(name, CHAMPION_PREV, old)
        client.set_model_version_tag(name, new, f"{TAG_PREFIX}prev_champion", old)
    client.set_registered_model_alias(name, CHAMPION, new)


def gate_vm(cfg: ExfmConfig, day: str, vm_name: str, table=None,
            log: Callable[[str], None] = print) -> Decision:
    """Judge VM ``vm_name``'s challenger of day ``day`` against ``@champion`` (and its control arm)
    on the day's slice (``table``, else read from the bucket) and move the aliases if it passes.

    Returns the :class:`Decision` (also recorded on the challenger's version as ``gate.*`` tags).
    """
    from exfm.jobs.vm_day import vm_config
    from exfm.registry.mlflow_registry import connect, latest_version, vm_model_name

    vm = vm_config(cfg, vm_name)
    p = cfg.promotion
    name = vm_model_name(vm_name)
    client = connect(cfg)
    cand = latest_version(cfg, name, before_day=day)
    if cand is None:
        return Decision(NO_DECISION, f"{name}: no version trained before {day}", p.metric,
                        vm=vm_name, day=day)
    cand_tags = client.get_model_version(name, cand).tags
    recorded = Decision.from_tags(cand_tags)
    if recorded is not None and recorded.day == day and recorded.by == "gate":
        since = (f"; rolled back since by {cand_tags.get('rollback.by', '?')} at "
                 f"{cand_tags['rollback.at']}" if _rolled_back(cand_tags) else "")
        log(f"gate {name} {day}: v{cand} already judged: {recorded.decision} ({recorded.reason})"
            f"{since}")
        return recorded
    champ = alias_version(client, name, CHAMPION)
    base = Decision(NO_DECISION, "", p.metric, vm=vm_name, day=day, challenger_version=cand,
                    champion_version=champ)
    if not p.enabled:
        base.reason = "promotion.enabled is false"
        return base
    if champ == cand:
        base.reason = f"v{cand} is already @champion"
        return base
    if _rolled_back(cand_tags):
        # on call took it out of service: the gate never puts it back (only `exfm promote` does)
        base.decision = REFUSED
        base.reason = (f"v{cand} was rolled back by {cand_tags.get('rollback.by', '?')} at "
                       f"{cand_tags['rollback.at']} ({cand_tags.get('rollback.reason', '')}); "
                       f"the gate leaves it out, `exfm promote --vm {vm_name} --version {cand}` "
                       "serves it again")
        _record(client, name, cand, base)
        log(f"gate {name} {day}: v{cand} {base.decision}: {base.reason}")
        return base
    rows = table if table is not None else day_slice(cfg, day, vm_name)
    control_name = vm_model_name(f"{vm_name}-control")
    control = latest_version(cfg, control_name, before_day=day) if vm.control else None
    d = decide(p, *_scores(cfg, [(name, cand), (name, champ), (control_name, control)], rows,
                           vm.task))
    d.vm, d.day = vm_name, day
    d.challenger_version, d.champion_version, d.control_version = cand, champ, control
    if d.promoted:
        _make_champion(client, name, cand, champ)
    _record(client, name, cand, d)
    log(f"gate {name} {day}: v{cand} {d.decision}: {d.reason}")
    return d


def gate_day(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print) -> dict[str, dict]:
    """The day's promote task: :func:`gate_vm` for every configured VM, ``{vm: {decision,
    reason, challenger_version, champion_version}}`` (small: fit for XCom)."""
    keep = ("decision", "reason", "challenger_version", "champion_version")
    out = {}
    for v in cfg.vms:
        d = gate_vm(cfg, day, v.name, log=log).as_dict()
        out[v.name] = {k: d[k] for k in keep}
    return out


def promote(cfg: ExfmConfig, vm_name: str, version: str, reason: str, by: str | None = None,
            log: Callable[[str], None] = print) -> Decision:
    """On call: make ``version`` the ``@champion`` of ``vm_name`` by hand (recorded as
    ``manual_promote`` with ``reason`` and who did it)."""
    from exfm.registry.mlflow_registry import connect, vm_model_name

    name = vm_model_name(vm_name)
    client = connect(cfg)
    try:
        client.get_model_version(name, str(version))
    except Exception as e:  # noqa: BLE001
        raise GateError(f"{name} v{version}: no such version ({e})") from None
    old = alias_version(client, name, CHAMPION)
    d = Decision("manual_promote", reason, cfg.promotion.metric, vm=vm_name,
                 day=_now()[:10], challenger_version=str(version), champion_version=old,
                 by=by or getpass.getuser())
    _make_champion(client, name, str(version), old)
    _record(client, name, str(version), d)
    log(f"{name}: @champion v{old} -> v{version} by {d.by}: {reason}")
    return d


def rollback(cfg: ExfmConfig, vm_name: str, reason: str, by: str | None = None,
             log: Callable[[str], None] = print) -> Decision:
    """On call: point ``@champion`` back at ``@champion_prev``. ``@champion_prev`` then moves to
    the champion the restored one had replaced (or is removed), so rollbacks chain."""
    from exfm.registry.mlflow_registry import connect, vm_model_name

    name = vm_model_name(vm_name)
    client = connect(cfg)
    cur, prev = alias_version(client, name, CHAMPION), alias_version(client, name, CHAMPION_PREV)
    if prev is None:
        raise GateError(f"{name}: no @{CHAMPION_PREV} to roll back to (@{CHAMPION} = v{cur})")
    client.set_registered_model_alias(name, CHAMPION, prev)
    older = client.get_model_version(name, prev).tags.get(f"{TAG_PREFIX}prev_champion")
    if older and older not in (cur, prev):
        client.set_registered_model_alias(name, CHAMPION_PREV, older)
    else:
        client.delete_registered_model_alias(name, CHAMPION_PREV)
    who = by or getpass.getuser()
    d = Decision("rollback", reason, cfg.promotion.metric, vm=vm_name, day=_now()[:10],
                 challenger_version=prev, champion_version=cur, by=who)
    _record(client, name, prev, d)
    if cur is not None:
        for k, v in {"rollback.reason": reason, "rollback.by": who, "rollback.at": _now(),
                     "rollback.to": prev}.items():
            client.set_model_version_tag(name, cur, k, v)
    log(f"{name}: rolled back @champion v{cur} -> v{prev} by {who}: {reason}")
    return d

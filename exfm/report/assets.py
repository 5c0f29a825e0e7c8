"""What each day produced, as the extra of an Airflow asset event: ``{day, uri, rows, digest,
mlflow_run_id}`` (plus a few fields of its own per kind), so the Airflow UI's asset view lists
every committed partition and registered snapshot with where it is and which run made it.

The DAG's tasks hand their step's result (the small dict :mod:`exfm.pipeline` returns) to one of
these and set it as the event's extra; this module never imports Airflow. Values are JSON
primitives (Airflow stores the extra as JSON).

Example:
    >>> partition_event({"day": "2026-01-03", "rows": 20000, "digest": "ab12",
    ...                  "uri": "s3://exfm/raw/day=2026-01-03"})["uri"]
    's3://exfm/raw/day=2026-01-03'
"""

from __future__ import annotations

from exfm.config import ExfmConfig


def _event(day: str, uri: str | None, rows, digest: str | None, run_id: str | None,
           **more) -> dict:
    out = {"day": day, "uri": uri, "rows": int(rows) if rows is not None else None,
           "digest": digest, "mlflow_run_id": run_id}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


def partition_event(result: dict, run_id: str | None = None) -> dict:
    """A committed partition (``land``'s or ``augment``'s result)."""
    return _event(result["day"], result.get("uri"), result.get("rows"), result.get("digest"),
                  run_id, fm_version=result.get("fm_version"),
                  freshness_gap_days=result.get("freshness_gap_days"))


def fm_snapshot_event(cfg: ExfmConfig, result: dict, data_digest: str | None) -> dict:
    """An FM snapshot (``train_fm``'s result); ``data_digest``: the raw day it trained on."""
    from exfm.registry.mlflow_registry import fm_model_name

    name = fm_model_name(cfg)
    return _event(result["day"], f"models:/{name}/{result['version']}", result.get("rows_day"),
                  data_digest, result.get("run_id"), model=name, version=str(result["version"]),
                  warm_start=result.get("warm_start"), reused=bool(result.get("reused")))


def vm_snapshot_event(cfg: ExfmConfig, day: str, result: dict) -> dict:
    """A VM's snapshots of the day (``train_vm``'s result): the FM arm's as the event, the control
    arm's beside it; the digest is the partition the VM trained on (its version's tag)."""
    from exfm.registry.mlflow_registry import connect

    arms = result.get("arms") or {}
    fm = arms.get("fm") or {}
    digest = None
    if fm.get("registered") and fm.get("version"):
        tags = connect(cfg).get_model_version(fm["registered"], str(fm["version"])).tags
        digest = tags.get("data_digest")
    ctl = arms.get("control") or {}
    return _event(day, (f"models:/{fm['registered']}/{fm['version']}" if fm.get("version")
                        else None), result.get("rows"), digest, fm.get("run_id"),
                  vm=result.get("vm"), fm_version=result.get("fm_version"),
                  control_uri=(f"models:/{ctl['registered']}/{ctl['version']}"
                               if ctl.get("version") else None),
                  control_run_id=ctl.get("run_id"))


def das_run_id(cfg: ExfmConfig, day: str) -> str | None:
    """The newest ``das-<day>`` run in ``exfm-das`` (the DAS run that committed the day)."""
    from exfm.registry.mlflow_registry import connect, experiment_name

    client = connect(cfg)
    exp = client.get_experiment_by_name(experiment_name(cfg, "das"))
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              f"tags.component = 'das' and tags.day = '{day}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None

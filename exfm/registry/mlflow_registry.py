"""MLflow as the Snapshot Publishing Database (SPD) and the lineage tracker.

- FM snapshots are versions of the registered model ``exfm-fm``; VM snapshots of
  ``exfm-vm-<name>``. A version's model is a pyfunc wrapping one ``model.pt`` (from
  :func:`exfm.models.snapshot.save_snapshot`: tensors and primitives only, loaded with
  ``weights_only=True``), with a signature and explicit pip requirements (no torch.export).
- Version tags: ``day``, ``rows_seen``, ``data_uris``, ``fm_version`` (VMs), ``git_rev``.
- Lineage: :func:`log_dataset_input` records the partitions a run read (URI + manifest digest)
  through ``mlflow.log_input``, so "which data and which FM made this VM" is one click.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from exfm.config import ExfmConfig, read_state_secrets
from exfm.config.root import read_job_secrets
from exfm.paths import project_root

SNAPSHOT_FILE = "model.pt"


class RegistryError(RuntimeError):
    """A registry lookup or write failed; the message names the model and version."""


def require_tracking(cfg: ExfmConfig, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when the tracking server does not answer (the mlflow client
    itself retries for minutes), before any lookup whose failure would read as "no version"."""
    import urllib.error
    import urllib.request

    url = cfg.tracking_uri.rstrip("/")
    if not url.startswith(("http://", "https://")):
        return  # a local file/sqlite store: nothing to reach
    try:
        urllib.request.urlopen(f"{url}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered (an auth or proxy status is still an answer)
    except (OSError, ValueError) as e:
        raise RegistryError(f"tracking.uri {url}: MLflow does not answer ({e}); is the stack up "
                            "(`exfm stack status`) or tracking.uri right?") from None


def fm_model_name(cfg: ExfmConfig) -> str:
    """The registered model of FM snapshots: ``cfg.das.fm_model`` (default ``exfm-fm``)."""
    return cfg.das.fm_model


def vm_model_name(vm: str) -> str:
    return f"exfm-vm-{vm}"


def experiment_name(cfg: ExfmConfig, family: str) -> str:
    """One experiment per model family: ``exfm-fm``, ``exfm-vm``, ``exfm-das``."""
    return f"{cfg.tracking.experiment_prefix}-{family}"


# the embedded stack's MLflow runs its basic-auth app with one generated admin login
TRACKING_USER = "admin"
TRACKING_PASSWORD_KEY = "mlflow_admin_password"  # in secrets.json and a Ray job's secrets file


def embedded_tracking(cfg: ExfmConfig) -> bool:
    """Whether ``cfg`` tracks to the embedded stack's MLflow (``tracking.uri`` unset, or set to
    its address, as a Ray job's ``$EXFM_TRACKING_URI`` does)."""
    uri = (cfg.tracking.uri or "").rstrip("/")
    return not uri or uri == f"http://{cfg.host}:{cfg.ports.mlflow}"


def tracking_credentials(cfg: ExfmConfig) -> tuple[str, str] | None:
    """(user, password) of the embedded stack's MLflow: from a Ray job's 0600 secrets file
    (``$EXFM_SECRETS_FILE``, written by a submitter that tracks to it), else the state folder's
    ``secrets.json``. None for an external tracking server (its client reads
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` from the environment) or before the
    first ``exfm stack up``."""
    pw = read_job_secrets().get(TRACKING_PASSWORD_KEY)
    if not pw and embedded_tracking(cfg):
        pw = read_state_secrets(cfg.state_path).get(TRACKING_PASSWORD_KEY)
    return (TRACKING_USER, pw) if pw else None


def use_tracking_credentials(cfg: ExfmConfig) -> None:
    """Give this process's mlflow client the embedded MLflow's login: the mlflow client reads
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` from the environment on every request (nothing on
    a command line, in a log or in a run's params). An external server's are left as set."""
    creds = tracking_credentials(cfg)
    if creds is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = creds


def connect(cfg: ExfmConfig):
    """Point the mlflow client at ``cfg`` (with the embedded stack's login, see
    :func:`use_tracking_credentials`) and return a ``MlflowClient``."""
    import mlflow

    use_tracking_credentials(cfg)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    return mlflow.MlflowClient(cfg.tracking_uri)


def ensure_experiments(cfg: ExfmConfig, vms: list[str] | None = None) -> dict[str, str]:
    """Create the experiments and registered models up front (parallel tasks must not race)."""
    from mlflow.exceptions import MlflowException

    client = connect(cfg)
    ids = {}
    for family in ("fm", "vm", "das", "pipeline"):
        name = experiment_name(cfg, family)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                ids[family] = client.create_experiment(name)
            except MlflowException as e:  # a task beside this one created it first
                if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                    raise
                exp = client.get_experiment_by_name(name)
        if exp is not None:
            ids[family] = exp.experiment_id
        # MLflow 3's UI opens an experiment of this kind on runs and metrics (not GenAI traces)
        client.set_experiment_tag(ids[family], "mlflow.experimentKind", "custom_model_development")
    names = [fm_model_name(cfg)] + [vm_model_name(v) for v in (vms if vms is not None else
                                                     [v.name for v in cfg.vms])]
    for n in names:
        try:
            client.create_registered_model(n)
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
    return ids


@lru_cache(maxsize=1)
def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],
                                       cwd=project_root(),
                                       stderr=subprocess.DEVNULL, text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


# -- the pyfunc wrapper -----------------------------------------------------------------------
def _pyfunc_class():
    import mlflow.pyfunc

    class ExfmSnapshotModel(mlflow.pyfunc.PythonModel):
        """Serves a snapshot: a DataFrame of the schema's columns -> ``pred_<task>`` columns."""

        def load_context(self, context):
            from exfm.models.snapshot import load_snapshot

            self.model, self.extra = load_snapshot(context.artifacts["snapshot"])

        def predict(self, context, model_input, params=None):
            import pandas as pd
            import pyarrow as pa

            from exfm.models.snapshot import predict_table

            table = pa.Table.from_pandas(model_input, preserve_index=False)
            preds = predict_table(self.model, table)
            return pd.DataFrame({f"pred_{t}": preds[:, i] for i, t in enumerate(self.model.tasks)})

    return ExfmSnapshotModel


def _pip_requirements() -> list[str]:
    import mlflow
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            "pyarrow", "pandas", "pydantic", "pyyaml"]


def log_snapshot(model, name: str, extra: dict[str, Any], sample=None, registered_name=None,
                 tags: dict[str, str] | None = None):
    """Log ``model`` as a pyfunc in the active run, optionally registering it. Returns ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    from exfm.models.snapshot import save_snapshot

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SNAPSHOT_FILE
        save_snapshot(model, path, extra)
        signature = None
        if sample is not None:
            import pandas as pd

            from exfm.models.build import unwrap
            from exfm.models.snapshot import predict_table

            m = unwrap(model)
            sample = sample.select([c for c in m.schema.columns if c in sample.column_names]).slice(0, 5)
            preds = predict_table(model, sample)
            out = pd.DataFrame({f"pred_{t}": preds[:, i] for i, t in enumerate(m.tasks)})
            signature = infer_signature(sample.to_pandas(), out)
        return mlflow.pyfunc.log_model(
            name=name, python_model=_pyfunc_class()(), artifacts={"snapshot": str(path)},
            signature=signature, pip_requirements=_pip_requirements(),
            registered_model_name=registered_name, await_registration_for=60,
            tags=tags,
        )


def _tag_values(tags: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items() if v is not None}


# Registration is two steps (create the version with its tags, then mark it complete); a version
# is visible to lookups only once ``complete`` is set, and ``reg_key`` makes a retry finish the
# same version instead of creating a second one.
COMPLETE_TAG = "complete"
REG_KEY_TAG = "reg_key"
# the tags that identify one registration (a retry of the same run/day gives the same key)
_IDENTITY_TAGS = ("train_run", "data_digest", "fm_version", "mode", "state_key")


def is_complete(version) -> bool:
    """A registry version every step of whose registration finished (versions registered before
    the ``complete`` tag existed carry no ``reg_key`` and count as complete)."""
    tags = version.tags or {}
    return tags.get(COMPLETE_TAG) == "true" or REG_KEY_TAG not in tags


def registration_key(name: str, day: str, tags: dict[str, Any], run_id: str) -> str:
    """Same run/day -> same key. Without any identity tag, the MLflow run is the identity."""
    import hashlib

    ident = {"name": name, "day": day, **{k: str(tags[k]) for k in _IDENTITY_TAGS if k in tags}}
    if len(ident) == 2:
        ident["run_id"] = run_id
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _mark_complete(client, name: str, version: str) -> None:
    client.set_model_version_tag(name, version, COMPLETE_TAG, "true")


def _registered_with_key(client, name: str, key: str):
    """The version of ``name`` an earlier attempt registered under ``key`` (complete or not)."""
    from mlflow.exceptions import MlflowException

    try:
        found = [v for v in client.search_model_versions(f"name='{name}'")
                 if (v.tags or {}).get(REG_KEY_TAG) == key]
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


@contextmanager
def _active_run(cfg: ExfmConfig, family: str, run_id: str | None, run_name: str):
    """The caller's active run; else resume ``run_id``; else a fresh run in ``<prefix>-<family>``."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and (run_id is None or active.info.run_id == run_id):
        yield active
        return
    if run_id is None:
        mlflow.set_experiment(experiment_name(cfg, family))
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name,
                          nested=active is not None) as run:
        yield run


def _register(cfg: ExfmConfig, name: str, family: str, model, day: str, rows_seen: int,
              data_uris: list[str], run_id: str | None, extra: dict[str, Any] | None, sample,
              tags: dict[str, Any]) -> str:
    """Log the snapshot and register it as one version of ``name``, idempotently: the version is
    created with all its tags and its ``reg_key`` in one call, then marked ``complete`` (lookups
    see it from then on). A retry after a kill between the steps finds the version by its key
    and completes it instead of registering a duplicate."""
    import mlflow

    client = connect(cfg)
    extra = {"day": day, **(extra or {})}
    with _active_run(cfg, family, run_id, f"{name}-{day}") as run:
        key = registration_key(name, day, tags, run.info.run_id)
        earlier = _registered_with_key(client, name, key)
        if earlier is not None:
            if not is_complete(earlier):
                _mark_complete(client, name, earlier.version)
            return str(earlier.version)
        info = log_snapshot(model, family, extra, sample=sample, registered_name=None)
        all_tags = {"day": day, "rows_seen": str(rows_seen), "data_uris": list(data_uris),
                    "git_rev": git_rev(), "model_uri": info.model_uri, "run_id": run.info.run_id,
                    **tags, REG_KEY_TAG: key}
        mv = mlflow.register_model(info.model_uri, name, await_registration_for=60,
                                   tags=_tag_values(all_tags))
    version = str(mv.version)
    _mark_complete(client, name, version)
    return version


def register_fm(cfg: ExfmConfig, model, day: str, rows_seen: int, data_uris: list[str],
                run_id: str | None = None, tags: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None, sample=None) -> str:
    """Log + register an FM snapshot as a new version of ``exfm-fm`` (``cfg.das.fm_model``);
    returns the version.

    Logged in the active run (or ``run_id``, or a fresh run in the ``fm`` experiment). Version
    tags: ``day``, ``rows_seen``, ``data_uris`` (JSON list), ``git_rev``, ``model_uri``,
    ``run_id`` + ``tags``. ``extra``: primitives stored in the snapshot beside the weights;
    ``sample``: a few rows (pa.Table) for the signature.
    """
    return _register(cfg, fm_model_name(cfg), "fm", model, day, rows_seen, data_uris, run_id, extra,
                     sample, dict(tags or {}))


def register_vm(cfg: ExfmConfig, vm: str, model, day: str, rows_seen: int, data_uris: list[str],
                fm_version: str | None, extra: dict[str, Any] | None = None, sample=None,
                tags: dict[str, Any] | None = None, run_id: str | None = None) -> str:
    """Log + register a VM snapshot in ``exfm-vm-<vm>``, tagged ``fm_version`` (the FM that
    taught it, ``none`` for a control arm); returns the version."""
    return _register(cfg, vm_model_name(vm), "vm", model, day, rows_seen, data_uris, run_id,
                     extra, sample, {"fm_version": fm_version or "none", **(tags or {})})


def live_versions(cfg: ExfmConfig, name: str, include_archived: bool = False) -> list:
    """The versions of ``name`` that lookups may return: not archived (unless
    ``include_archived``), not superseded by a re-run of their day. ``[]`` when the model is not
    registered yet; :class:`RegistryError` when the registry cannot answer (an outage is never read as "no version")."""
    from mlflow.exceptions import MlflowException

    try:
        versions = connect(cfg).search_model_versions(f"name='{name}'")
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            return []
        raise RegistryError(f"registry {cfg.tracking_uri}: cannot list versions of {name}: "
                            f"{e.message}") from e
    except Exception as e:  # noqa: BLE001 - connection refused, timeout, DNS
        raise RegistryError(f"registry {cfg.tracking_uri} unreachable (listing {name}): "
                            f"{type(e).__name__}: {e}") from e
    return [v for v in versions if is_complete(v) and not v.tags.get("superseded_by")
            and (include_archived or v.tags.get("archived") != "true")]


def latest_version(cfg: ExfmConfig, name: str, before_day: str | None = None) -> str | None:
    """The newest live version of ``name``: newest ``day`` tag (< ``before_day`` if given), then
    the highest version of that day; None if there is none. Raises :class:`RegistryError` when the
    registry cannot be reached."""
    ok = [v for v in live_versions(cfg, name)
          if before_day is None or (v.tags.get("day") or "9999") < before_day]
    if not ok:
        return None
    return str(max(ok, key=lambda v: (v.tags.get("day") or "", int(v.version))).version)


def find_version(cfg: ExfmConfig, name: str, **tags: str) -> str | None:
    """The highest live (not archived, not superseded) version of ``name`` whose tags equal
    ``tags``, or None.

    What a retried job asks ("did an earlier attempt of this exact run register already?"),
    e.g. ``find_version(cfg, fm_model_name(cfg), train_run=run)`` or
    ``find_version(cfg, vm_model_name(vm), day=d, data_digest=digest, fm_version="none")``.
    """
    done = [v for v in live_versions(cfg, name)
            if all(v.tags.get(k) == want for k, want in tags.items())]
    return str(max(int(v.version) for v in done)) if done else None


def latest_fm_version(cfg: ExfmConfig, before_day: str | None = None) -> str | None:
    return latest_version(cfg, fm_model_name(cfg), before_day)


def load_snapshot_version(cfg: ExfmConfig, name: str, version: str | None = "latest"):
    """Download and load version ``version`` (a number, ``latest`` or ``@alias``) of ``name``.

    Returns ``(model, extra, version)``. Raises :class:`RegistryError` naming what is missing.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from exfm.models.snapshot import load_snapshot

    client = connect(cfg)
    try:
        if version in (None, "latest"):
            version = latest_version(cfg, name)
            if version is None:
                raise RegistryError(f"registry {cfg.tracking_uri}: model '{name}' has no versions")
        elif str(version).startswith("@"):
            version = client.get_model_version_by_alias(name, str(version)[1:]).version
        mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        raise RegistryError(f"registry {cfg.tracking_uri}: {name} version {version!r} "
                            f"does not exist: {e.message}") from None
    uri = mv.tags.get("model_uri") or mv.source
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        found = sorted(local.rglob(SNAPSHOT_FILE))
        if not found:
            raise RegistryError(f"registry: {name} v{mv.version} ({uri}) holds no {SNAPSHOT_FILE}")
        model, extra = load_snapshot(found[0])
    return model, extra, str(mv.version)


def load_fm(cfg: ExfmConfig, version: str | None = "latest"):
    """``(model, version)`` of an ``exfm-fm`` snapshot: a number, ``latest`` or ``@alias``."""
    model, _extra, v = load_snapshot_version(cfg, fm_model_name(cfg), version)
    return model, v


def archive_version(cfg: ExfmConfig, name: str, version: str, delete_artifacts: bool = True) -> None:
    """Garbage-collect a snapshot: tag the version ``archived=true`` (``latest_version`` skips it,
    the UI still shows its lineage) and delete its model artifacts from the object store."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = connect(cfg)
    mv = client.get_model_version(name, str(version))
    if delete_artifacts:
        uri = _artifact_location(client, mv)
        if uri:
            try:
                get_artifact_repository(uri).delete_artifacts()
            except Exception as e:  # noqa: BLE001
                raise RegistryError(f"registry: {name} v{version}: cannot delete artifacts at "
                                    f"{uri}: {e}") from e
    client.set_model_version_tag(name, str(version), "archived", "true")


def _artifact_location(client, mv) -> str | None:
    """Where the version's model files live (MLflow 3: the LoggedModel's artifact location)."""
    model_id = getattr(mv, "model_id", None)
    if not model_id and (mv.source or "").startswith("models:/m-"):
        model_id = mv.source[len("models:/"):].split("/")[0]
    if model_id:
        try:
            return client.get_logged_model(model_id).artifact_location
        except Exception:  # noqa: BLE001
            pass
    return mv.source if mv.source and not mv.source.startswith("models:/") else None


def log_dataset_input(uri: str, manifest, name: str | None = None, context: str = "training",
                      sample=None) -> None:
    """Record a committed partition the active run read (lineage) as an MLflow dataset input.

    ``manifest``: the partition's :class:`~exfm.storage.partitions.Manifest` (or its digest).
    The dataset is named ``name`` (default ``<prefix>-<day>``), sourced at ``uri`` and
    identified by the manifest's content digest, so the run page links to the exact data.
    """
    import mlflow
    import pandas as pd

    digest = manifest if isinstance(manifest, str) else manifest.digest
    if name is None:
        name = (f"{manifest.prefix}-{manifest.day}" if not isinstance(manifest, str)
                else uri.rstrip("/").rsplit("/", 1)[-1])
    df = sample.slice(0, 0).to_pandas() if sample is not None else pd.DataFrame()
    ds = mlflow.data.from_pandas(df, source=uri, name=name, digest=digest[:36])
    mlflow.log_input(ds, context=context)

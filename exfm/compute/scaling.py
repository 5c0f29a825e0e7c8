"""Config -> Ray resources and torch device: one mapping for every Ray job.

``ray.use_gpu: false`` (the default) gives CPU workers, gloo DDP and sparse embedding gradients;
``true`` gives one GPU per worker (``gpus_per_worker``), NCCL DDP, models and batches on
``cuda``. The mapping is plain data (:func:`worker_resources`, :func:`device_name`) so unit tests
check it without a cluster; :func:`scaling_config` builds Ray Train's object from it.

Example:
    >>> cfg = load_config(None, ["ray.num_workers=2", "ray.use_gpu=true",
    ...                          "models.embedding_optimizer=adam"])
    >>> worker_resources(cfg)
    {'CPU': 1.0, 'GPU': 1.0}
"""

from __future__ import annotations

from exfm.config import ConfigError, ExfmConfig


def worker_resources(cfg: ExfmConfig) -> dict[str, float]:
    """Resources one training worker (FM rank, or the VM task) asks Ray for."""
    res = {"CPU": float(cfg.ray.cpus_per_worker)}
    if cfg.ray.use_gpu:
        res["GPU"] = float(cfg.ray.gpus_per_worker)
    return res


def device_name(cfg: ExfmConfig) -> str:
    """Where models and batches live on a worker: ``cuda`` iff ``ray.use_gpu``."""
    return "cuda" if cfg.ray.use_gpu else "cpu"


def torch_threads(cfg: ExfmConfig) -> int:
    """Intra-op threads per worker: ``models.torch_threads`` or the worker's CPU share (never
    the whole machine: N workers on one node would oversubscribe its cores)."""
    return cfg.models.torch_threads or max(1, int(cfg.ray.cpus_per_worker))


def check_gpu_config(cfg: ExfmConfig) -> None:
    """Fail loudly on a GPU setup that would break at the first all-reduce.

    Raises:
        ConfigError: ``use_gpu`` with several workers and sparse embedding gradients (NCCL
            cannot all-reduce sparse tensors), or ``gpus_per_worker`` of 0 with ``use_gpu``.
    """
    if not cfg.ray.use_gpu:
        return
    if cfg.ray.gpus_per_worker <= 0:
        raise ConfigError("ray.use_gpu=true needs ray.gpus_per_worker > 0")
    if cfg.ray.num_workers > 1 and cfg.models.embedding_optimizer == "sparse_adam":
        raise ConfigError("ray.use_gpu=true with ray.num_workers > 1: NCCL DDP cannot all-reduce "
                          "sparse embedding gradients; set models.embedding_optimizer=adam")


def scaling_config(cfg: ExfmConfig, num_workers: int | None = None):
    """Ray Train's ``ScalingConfig`` for ``cfg`` (``num_workers`` default: ``ray.num_workers``)."""
    from ray.train import ScalingConfig

    check_gpu_config(cfg)
    return ScalingConfig(num_workers=num_workers or cfg.ray.num_workers,
                         use_gpu=cfg.ray.use_gpu, resources_per_worker=worker_resources(cfg))


def task_options(cfg: ExfmConfig) -> dict:
    """``.options(...)`` of a one-worker Ray task (the VM job): same resources as a FM rank."""
    res = worker_resources(cfg)
    return {"num_cpus": res["CPU"], "num_gpus": res.get("GPU", 0),
            "max_retries": cfg.ray.max_failures, "retry_exceptions": False}

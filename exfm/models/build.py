"""Factories: config -> model, and the plain spec a snapshot rebuilds a model from."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch
from torch import nn

from exfm.config import ExfmConfig, VMConfig
from exfm.data.schema import DatasetSchema
from exfm.data.vocab import input_schema, schema_from_dump
from exfm.models.foundation import FM_HPARAMS, FoundationModel
from exfm.models.vertical import VM_HPARAMS, VerticalModel


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _hparams(cfg: ExfmConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    dump = cfg.models.model_dump(mode="json")
    return {k: dump[k] for k in keys}


def _inputs(schema: DatasetSchema, role: str, sample: pa.Table | None, domain=None, stage=None):
    ins = input_schema(schema, role, domain, stage)
    return ins if sample is None else ins.with_dense_scales(sample)


def build_fm(schema: DatasetSchema, tasks: list[str] | None, cfg: ExfmConfig,
             name: str | None = None, sample: pa.Table | None = None) -> FoundationModel:
    """The teacher over every field of ``schema`` (fm_only, domain and stage included), one
    logit per task.

    Args:
        schema: the dataset schema. tasks: label names (None = all of ``schema.labels``).
        cfg: reads ``cfg.models``. name: FM kind, default ``cfg.models.fm``.
        sample: the first day it will train on: fixes the scale of its dense inputs
            (``exfm.data.dense_scale``; None = every dense column as logged).
    """
    tasks = list(schema.labels if tasks is None else tasks)
    missing = [t for t in tasks if t not in schema.labels]
    if missing:
        raise ValueError(f"tasks {missing} are not labels of schema '{schema.name}'")
    with torch.random.fork_rng(devices=[]):  # same seed -> same init, global RNG untouched
        torch.manual_seed(cfg.models.seed)
        return FoundationModel(name or cfg.models.fm, _inputs(schema, "fm", sample), tasks,
                               _hparams(cfg, FM_HPARAMS))


def build_vm(vm: VMConfig, schema: DatasetSchema, cfg: ExfmConfig,
             sample: pa.Table | None = None) -> VerticalModel:
    """The serving model ``vm.model`` for ``vm.task``, reading ``schema.fields_for("vm")`` and
    the domain / stage columns its slice spans more than one value of. ``sample``: as
    :func:`build_fm`'s (the VM's first day, its slice)."""
    if vm.task not in schema.labels:
        raise ValueError(f"VM '{vm.name}': task '{vm.task}' is not a label of '{schema.name}'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.models.seed)
        return VerticalModel(vm.model, _inputs(schema, "vm", sample, vm.domain, vm.stage), vm.task,
                             _hparams(cfg, VM_HPARAMS), name=vm.name)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """Primitives that rebuild ``model`` (kind, name, schema, tasks, hparams)."""
    m = unwrap(model)
    return {"role": m.role, "kind": m.kind, "name": getattr(m, "name", m.kind),
            "schema": m.schema.model_dump(mode="json"), "tasks": list(m.tasks),
            "hparams": dict(m.hp)}


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`model_spec` (fresh weights)."""
    schema = schema_from_dump(spec["schema"])
    if spec["role"] == "fm":
        return FoundationModel(spec["kind"], schema, spec["tasks"], spec["hparams"])
    if spec["role"] == "vm":
        return VerticalModel(spec["kind"], schema, spec["tasks"][0], spec["hparams"],
                             name=spec.get("name", ""))
    raise ValueError(f"unknown model role {spec['role']!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in unwrap(model).parameters())

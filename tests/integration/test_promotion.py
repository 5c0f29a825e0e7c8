"""The VM promotion gate against a real MLflow registry (artifacts on SeaweedFS).

Tiny VMs are trained here and registered directly (no Ray): a good first version becomes the
first ``@champion``; a challenger trained one day on shuffled labels is refused with both
figures on its tags and the champion kept; a better one is promoted with the old champion as
``@champion_prev``; a re-run of the day returns the recorded decision; ``rollback`` restores the
previous champion, and a later day's gate does not put the rolled-back version back; ``promote`` by
hand is recorded the same way and lifts that.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from exfm.config import VMConfig
from exfm.data.schema import DatasetSchema, SparseField
from exfm.models.build import build_vm
from exfm.promotion.gate import (CHAMPION, CHAMPION_PREV, GateError, alias_version, gate_day,
                                 gate_vm, promote, rollback)
from exfm.registry.mlflow_registry import connect, ensure_experiments, register_vm
from exfm.train.trainer import train_vm_day

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(name="gate", timestamp="ts", request_id="rid", labels=["click"],
                       sparse=[SparseField(name="user_id", vocab=20),
                               SparseField(name="item_id", vocab=30)], dense=["price"])
RNG = np.random.default_rng(7)
U, I = RNG.normal(0, 1.5, 20), RNG.normal(0, 1.5, 30)


def day_table(n: int, seed: int, shuffle: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    u, i = rng.integers(0, 20, n), rng.integers(0, 30, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(U[u] + I[i] - 1.0)))).astype(np.int64)
    if shuffle:
        y = rng.permutation(y)
    return pa.table({"ts": pa.array(np.arange(n), pa.int64()), "rid": pa.array(np.arange(n), pa.int64()),
                     "user_id": pa.array(u, pa.int64()), "item_id": pa.array(i, pa.int64()),
                     "price": pa.array(rng.random(n), pa.float32()), "click": pa.array(y, pa.int64())})


@pytest.fixture(scope="module")
def gcfg(stack_cfg):
    vm = VMConfig(name="gatevm", model="fam", task="click", mode="none", control=True)
    return stack_cfg.model_copy(update={
        "vms": [vm], "promotion": stack_cfg.promotion.model_copy(update={"max_abs_worsening": 0.01}),
        "models": stack_cfg.models.model_copy(update={"batch_size": 128})})


def train_register(cfg, name: str, day: str, tables: list[pa.Table], epochs: int = 3) -> str:
    vm = cfg.vms[0]
    model = build_vm(vm, SCHEMA, cfg)
    state = {}
    for _ in range(epochs):
        for t in tables:
            state = train_vm_day(model, t, SCHEMA, vm, cfg, state=state).state
    return register_vm(cfg, name, model, day, len(tables) * 4000, ["s3://test/none"], None,
                       sample=tables[0].slice(0, 8))


def test_gate_promotes_better_refuses_worse_and_rolls_back(gcfg):
    cfg = gcfg
    ensure_experiments(cfg, vms=["gatevm", "gatevm-control"])
    client = connect(cfg)
    name = "exfm-vm-gatevm"
    t = {d: day_table(4000, seed=d) for d in range(1, 5)}
    a = train_register(cfg, "gatevm", "2026-01-01", [t[1]])
    train_register(cfg, "gatevm-control", "2026-01-01", [t[1]], epochs=1)

    first = gate_vm(cfg, "2026-01-02", "gatevm", table=t[2])
    assert first.decision == "promoted", first.reason
    assert alias_version(client, name, CHAMPION) == a

    bad = train_register(cfg, "gatevm", "2026-01-02", [day_table(4000, seed=2, shuffle=True)])
    refused = gate_vm(cfg, "2026-01-03", "gatevm", table=t[3])
    assert refused.decision == "refused" and "worse by" in refused.reason, refused.reason
    assert refused.challenger > refused.champion  # NE: the shuffled one is worse
    assert alias_version(client, name, CHAMPION) == a
    tags = client.get_model_version(name, bad).tags
    assert tags["gate.decision"] == "refused" and tags["gate.day"] == "2026-01-03"
    assert float(tags["gate.challenger"]) == pytest.approx(refused.challenger)
    assert float(tags["gate.champion"]) == pytest.approx(refused.champion)
    assert tags["gate.champion_version"] == a and tags["gate.reason"] == refused.reason

    good = train_register(cfg, "gatevm", "2026-01-03", [t[1], t[2], t[3]])
    promoted = gate_vm(cfg, "2026-01-04", "gatevm", table=t[4])
    assert promoted.decision == "promoted", promoted.reason
    assert promoted.challenger <= promoted.champion + 0.01
    assert alias_version(client, name, CHAMPION) == good
    assert alias_version(client, name, CHAMPION_PREV) == a
    # a re-run of the day returns what was decided, without moving anything
    again = gate_vm(cfg, "2026-01-04", "gatevm", table=t[4])
    assert again.decision == "promoted" and again.challenger == promoted.challenger
    assert gate_day(cfg, "2026-01-04", log=lambda m: None)["gatevm"] == {
        "decision": "promoted", "reason": promoted.reason, "challenger_version": good,
        "champion_version": a}

    rb = rollback(cfg, "gatevm", reason="bad serving metrics", by="oncall-test")
    assert rb.decision == "rollback" and alias_version(client, name, CHAMPION) == a
    assert alias_version(client, name, CHAMPION_PREV) is None
    assert client.get_model_version(name, good).tags["rollback.to"] == a
    history = json.loads(client.get_model_version(name, a).tags["gate.history"])
    assert [h["decision"] for h in history] == ["promoted", "rollback"]
    with pytest.raises(GateError, match="no @champion_prev"):
        rollback(cfg, "gatevm", reason="twice")
    said: list[str] = []  # the day it was promoted: the recorded decision, and what came since
    assert gate_vm(cfg, "2026-01-04", "gatevm", table=t[4], log=said.append).decision == "promoted"
    assert "rolled back since by oncall-test" in said[-1], said
    # no newer version yet: the next day's gate judges the rolled-back one again, and leaves it
    # out instead of undoing on call's rollback
    after = gate_vm(cfg, "2026-01-05", "gatevm", table=day_table(4000, seed=5))
    assert after.decision == "refused" and after.challenger_version == good, after.reason
    assert "rolled back by oncall-test" in after.reason and "bad serving metrics" in after.reason
    assert alias_version(client, name, CHAMPION) == a

    manual = promote(cfg, "gatevm", good, reason="fixed upstream", by="oncall-test")
    assert manual.by == "oncall-test" and alias_version(client, name, CHAMPION) == good
    assert alias_version(client, name, CHAMPION_PREV) == a
    assert client.get_model_version(name, good).tags["gate.decision"] == "manual_promote"
    # put back by hand: the gate no longer holds the rollback against it
    promote(cfg, "gatevm", a, reason="back to a for a test", by="oncall-test")
    again = gate_vm(cfg, "2026-01-06", "gatevm", table=day_table(4000, seed=6))
    assert "rolled back" not in again.reason and again.challenger_version == good, again.reason

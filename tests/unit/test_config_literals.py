"""The allowed kinds and modes are written once, as the config's Literals: the tuples code checks
against are the same values, config accepts each of them and refuses anything else by its key."""

from typing import get_args

import pytest
import torch

from exfm.config import ConfigError, load_config
from exfm.config import kinds as K
from exfm.config.method import DistillationConfig, ModelsConfig, VMConfig

# (dotted key, the override template, the Literal, the tuple derived from it)
CASES = [
    ("models.fm", "models.fm={}", K.FmKind, K.FM_KINDS),
    ("distillation.mode", "distillation.mode={}", K.DistillMode, K.DISTILL_MODES),
    ("distillation.tune_metric", "distillation.tune_metric={}", K.TuneMetric, K.TUNE_METRICS),
    ("vms.0.model", "vms=[{{name: v, model: {}}}]", K.VmKind, K.VM_KINDS),
    ("vms.0.mode", "vms=[{{name: v, mode: {}}}]", K.DistillMode, K.DISTILL_MODES),
    ("vms.0.stage", "vms=[{{name: v, stage: {}}}]", K.Stage, K.STAGES),
]


@pytest.mark.parametrize("key,template,literal,values", CASES, ids=[c[0] for c in CASES])
def test_tuple_is_the_literal_and_config_takes_exactly_it(key, template, literal, values):
    assert values == get_args(literal) and len(values) == len(set(values)) > 1
    for v in values:
        load_config(None, [template.format(v)], env={})
    with pytest.raises(ConfigError) as e:
        load_config(None, [template.format("bogus")], env={})
    assert f"{key}:" in str(e.value)


def test_config_fields_are_typed_with_the_literals():
    assert ModelsConfig.model_fields["fm"].annotation == K.FmKind
    assert ModelsConfig.model_fields["embedding_optimizer"].annotation == K.EmbeddingOptimizer
    assert DistillationConfig.model_fields["mode"].annotation == K.DistillMode
    assert DistillationConfig.model_fields["tune_metric"].annotation == K.TuneMetric
    assert VMConfig.model_fields["model"].annotation == K.VmKind
    assert K.DistillMode in get_args(VMConfig.model_fields["mode"].annotation)
    assert K.Stage in get_args(VMConfig.model_fields["stage"].annotation)


def test_code_checks_against_the_same_tuples():
    from exfm.data import generator, validate
    from exfm.models import FM_KINDS, VM_KINDS
    from exfm.train import tuning

    assert FM_KINDS is K.FM_KINDS and VM_KINDS is K.VM_KINDS
    assert generator.STAGES is K.STAGES and validate.STAGES is K.STAGES
    assert set(tuning.TUNED_MODES) <= set(K.DISTILL_MODES)


def test_unknown_mode_is_refused_by_the_loss_too():
    from exfm.distill import distillation_loss

    z = (torch.zeros(2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="bogus"):
        distillation_loss("bogus", z, torch.zeros(2))


def test_unquoted_dates_are_read_as_dates(tmp_path):
    # YAML turns an unquoted 2026-03-01 into a date, on the command line and in the file
    cfg = load_config(None, ["data.generator.start_date=2026-03-01"], env={})
    assert cfg.data.generator.start_date == "2026-03-01"
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  generator:\n    start_date: 2026-03-02\n")
    assert load_config(p, env={}).data.generator.start_date == "2026-03-02"
    with pytest.raises(ConfigError, match="data.generator.start_date:"):
        load_config(None, ["data.generator.start_date=March"], env={})


def test_stack_services_are_their_literal_in_start_order():
    from exfm.stack.services import DEPENDS, SERVICES, Service

    assert SERVICES == list(get_args(Service)) and set(DEPENDS) == set(SERVICES)
    assert all(SERVICES.index(d) < SERVICES.index(s) for s, deps in DEPENDS.items() for d in deps)

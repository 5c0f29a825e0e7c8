"""Distillation: GS scales only the distillation heads' path into the backbone, LS clips, the SA
never sees the VM's gradient, vanilla and AH reach the serving head differently."""

import pytest
import torch
from torch.nn import functional as F

from exfm.config import VMConfig
from exfm.data.batches import TableTensors
from exfm.distill import StudentAdapter, distillation_loss, scale_label, student_adapter_step
from exfm.models import build_vm
from exfm.models.gradient_scaling import GradientScale, scale_gradient


def test_gradient_scale_function():
    x = torch.randn(5, requires_grad=True)
    y = GradientScale.apply(x, 3.0)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, 3.0 * torch.arange(5.0))
    assert scale_gradient(x, 1.0) is x


def test_label_scaling_clips_at_one():
    p = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9])
    torch.testing.assert_close(scale_label(p, 3.0), torch.tensor([0.0, 0.3, 0.9, 1.0, 1.0]))
    torch.testing.assert_close(scale_label(p, 1.0), p)


@pytest.fixture
def vm_and_batch(tiny_schema, tiny_cfg, tiny_table):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.models.embedding_optimizer = "adam"  # dense gradients: easy to compare
    vm = build_vm(VMConfig(name="v", model="deepfam"), tiny_schema, cfg)
    batch = next(TableTensors.from_table(tiny_table, vm.schema, ["click"]).batches(32))
    return vm, batch


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters()}


def test_gs_scales_exactly_the_backbone_gradient_from_distillation_heads(vm_and_batch):
    vm, batch = vm_and_batch
    y, p_fm = batch["labels"][:, 0], batch["fm_pred"][:, 0]
    p_sa = torch.sigmoid(torch.logit(p_fm) + 0.3)
    alpha = 2.5

    def parts(gs):
        z_s, z_d, z_d2 = vm(batch, gs=gs)
        label = F.binary_cross_entropy_with_logits(z_s, y)
        dist = (F.binary_cross_entropy_with_logits(z_d, p_fm)
                + F.binary_cross_entropy_with_logits(z_d2, p_sa))
        return label, dist

    g_label = _grads(vm, parts(1.0)[0])
    g_dist = _grads(vm, parts(1.0)[1])
    label, dist = parts(alpha)
    g_total = _grads(vm, label + dist)
    for n, g in g_total.items():
        if n.startswith("backbone."):  # manual: label grad + alpha * distillation grad
            torch.testing.assert_close(g, g_label[n] + alpha * g_dist[n], rtol=1e-5, atol=1e-7)
        else:  # heads: unscaled
            torch.testing.assert_close(g, g_label[n] + g_dist[n], rtol=1e-5, atol=1e-7)
    assert any(g_dist[n].abs().sum() > 0 for n in g_dist if n.startswith("backbone."))
    # the label path alone is untouched by alpha
    g_label_alpha = _grads(vm, parts(alpha)[0])
    for n in g_label:
        torch.testing.assert_close(g_label_alpha[n], g_label[n])


def test_mode_losses_follow_equations(vm_and_batch):
    vm, batch = vm_and_batch
    y, p = batch["labels"][:, 0], batch["fm_pred"][:, 0]
    z = vm(batch, gs=1.0)
    bce = F.binary_cross_entropy_with_logits
    p_sa = torch.full_like(p, 0.2)
    cases = {
        "none": bce(z[0], y),
        "vanilla": bce(z[0], y) + bce(z[0], p),
        "ah": bce(z[0], y) + 0.5 * bce(z[1], (2 * p).clamp(max=1)),
        "ah_sa": bce(z[0], y) + 0.5 * bce(z[1], (2 * p).clamp(max=1)) + 0.7 * bce(z[2], p_sa),
    }
    for mode, want in cases.items():
        got, parts = distillation_loss(mode, z, y, p, p_sa, lw=0.5, ls=2.0, sa_weight=0.7)
        torch.testing.assert_close(got, want)
        assert parts["loss/total"] == pytest.approx(float(want.detach()))


def test_vanilla_and_ah_touch_the_serving_head_differently(vm_and_batch):
    vm, batch = vm_and_batch
    y, p = batch["labels"][:, 0], batch["fm_pred"][:, 0]
    serving = [n for n, _ in vm.named_parameters() if n.startswith("serving_head.")]
    aux = [n for n, _ in vm.named_parameters() if n.startswith("aux_head.")]

    def grads(mode, p_fm):
        return _grads(vm, distillation_loss(mode, vm(batch, gs=2.0), y, p_fm)[0])

    # AH: the serving head's gradient does not depend on the FM at all; the AH gets it
    a1, a2 = grads("ah", p), grads("ah", 1 - p)
    for n in serving:
        torch.testing.assert_close(a1[n], a2[n])
    assert any(not torch.allclose(a1[n], a2[n]) for n in aux)
    # vanilla: the FM target reaches the serving head; the AH is idle
    v1, v2 = grads("vanilla", p), grads("vanilla", 1 - p)
    assert any(not torch.allclose(v1[n], v2[n]) for n in serving)
    assert all(torch.count_nonzero(v1[n]) == 0 for n in aux)


def test_student_adapter_gets_no_gradient_from_the_vm(vm_and_batch):
    vm, batch = vm_and_batch
    y, p = batch["labels"][:, 0], batch["fm_pred"][:, 0]
    sa = StudentAdapter(8)
    p_sa = torch.sigmoid(sa(p))  # not detached by the caller: the loss applies sg itself
    loss, _ = distillation_loss("ah_sa", vm(batch, gs=2.0), y, p, p_sa)
    loss.backward()
    assert all(q.grad is None for q in sa.parameters())
    # Algorithm 1 (i)-(ii): the SA steps on its own loss, p_SA comes from the updated SA
    opt = torch.optim.Adam(sa.parameters(), lr=0.1)
    before = [q.detach().clone() for q in sa.parameters()]
    loss_sa, p_sa = student_adapter_step(sa, opt, p, y)
    assert not p_sa.requires_grad
    assert any(not torch.equal(b, q) for b, q in zip(before, sa.parameters()))
    torch.testing.assert_close(p_sa, torch.sigmoid(sa(p)).detach())


def test_student_adapter_starts_as_identity():
    p = torch.tensor([0.01, 0.3, 0.97])
    torch.testing.assert_close(torch.sigmoid(StudentAdapter(4)(p)), p)

"""Each weighting strategy on a toy problem whose answer is known."""
from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo.weighting import DWA, PCGrad, Uncertainty

REG = zoo.load_registry()


def test_uncertainty_weights_follow_inverse_loss():
    """With constant losses L_a = 1 and L_b = 4 the optimum is exp(s_i) = L_i: weight_a / weight_b = 4."""
    u = Uncertainty(["a", "b"], {"a": 1.0, "b": 1.0})
    opt = torch.optim.Adam(u.parameters(), lr=0.05)
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(4.0)}
    for _ in range(600):
        opt.zero_grad()
        u.backward(losses, shared=[])
        opt.step()
    w = u.weights()
    assert w["a"] / w["b"] == pytest.approx(4.0, rel=0.05)
    assert w["b"] == pytest.approx(0.5 / 4.0, rel=0.05)


def test_pcgrad_projection_of_opposed_gradients():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    combined = PCGrad.project([g1, g2])
    # g1' = g1 - (g1.g2/|g2|^2) g2 = [0.5, 0.5]; g2' = g2 - (g2.g1/|g1|^2) g1 = [0, 1]
    assert torch.allclose(combined, torch.tensor([0.5, 1.5]))
    # no conflict: plain sum
    assert torch.allclose(PCGrad.project([g1, torch.tensor([1.0, 1.0])]), torch.tensor([2.0, 1.0]))


def test_pcgrad_backward_sets_shared_and_head_grads():
    shared = torch.nn.Parameter(torch.zeros(2))
    head = torch.nn.Parameter(torch.tensor(2.0))
    losses = {"a": shared[0] * 1.0 + head * 0.0 + head ** 2, "b": -shared[0] + shared[1]}
    PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}).backward(losses, [shared])
    assert torch.allclose(shared.grad, torch.tensor([0.5, 1.5]))
    assert head.grad == pytest.approx(4.0)  # d(head^2)/d head, untouched by the projection


def test_dwa_favours_the_slower_task():
    d = DWA(["fast", "slow"], {"fast": 1.0, "slow": 1.0}, temperature=2.0)
    d.epoch_end({"fast": 1.0, "slow": 1.0})
    assert d.weights() == {"fast": 1.0, "slow": 1.0}  # equal for the first epochs
    d.epoch_end({"fast": 0.5, "slow": 1.0})
    w = d.weights()
    assert w["slow"] > w["fast"] and w["slow"] + w["fast"] == pytest.approx(2.0)
    expected_slow = 2 * math.exp(1.0 / 2) / (math.exp(0.5 / 2) + math.exp(1.0 / 2))
    assert w["slow"] == pytest.approx(expected_slow)


def test_gradnorm_balances_gradient_magnitudes():
    """Task b's loss is 10x smaller in gradient: GradNorm raises its weight above task a's."""
    torch.manual_seed(0)
    gn = REG.build("weightings", "gradnorm", names=["a", "b"], weights={"a": 1.0, "b": 1.0})
    lin = torch.nn.Linear(4, 1)
    x = torch.randn(32, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    for _ in range(30):
        y = lin(x)
        losses = {"a": 10 * y.pow(2).mean(), "b": 0.1 * (y - 1).pow(2).mean()}
        opt.zero_grad()
        gn.backward(losses, list(lin.parameters()))
        opt.step()
    w = gn.weights()
    assert w["b"] > w["a"] and w["a"] + w["b"] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("name", REG.names("weightings"))
def test_every_weighting_trains_a_two_head_model(name):
    torch.manual_seed(0)
    model = zoo.build_model("scratch", {"m": "binary_mask", "c": "classification"}, encoder_settings={"width": 4, "depth": 2})
    w = REG.build("weightings", name, names=["m", "c"], weights={"m": 1.0, "c": 1.0})
    opt = torch.optim.AdamW(list(model.parameters()) + list(w.parameters()), lr=1e-2)
    x = torch.rand(8, 1, 12, 12)
    mask, label = (x[:, 0] > 0.5).float(), torch.arange(8) % 10
    first = None
    for step in range(15):
        out = model(x)
        losses = {"m": torch.nn.functional.binary_cross_entropy_with_logits(out["m"][:, 0], mask),
                  "c": torch.nn.functional.cross_entropy(out["c"], label)}
        opt.zero_grad()
        w.backward(losses, list(model.encoder.parameters()))
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        total = float(sum(losses.values()))
        first = first if first is not None else total
        w.epoch_end({k: float(v) for k, v in losses.items()})
    assert total < first
    assert set(w.weights()) == {"m", "c"}

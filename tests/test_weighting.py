"""Each weighting strategy on a toy problem whose answer is known."""
from __future__ import annotations

import math

import pytest
import torch

import zoo

REG = zoo.load_registry()


def build(name, names=("a", "b"), **settings):
    return REG.build("weightings", name, names=list(names), weights={n: 1.0 for n in names}, **settings)


def toy_step(w, grads, head_losses=None):
    """One backward of strategy ``w`` on a toy problem whose per-task gradients on the shared
    parameter ``x`` (at 0) are the rows of ``grads``: L_i = g_i . x + 1 (losses 1, gradients g_i)."""
    x = torch.zeros(grads.shape[1], requires_grad=True)
    losses = {n: grads[i] @ x + 1.0 for i, n in enumerate(w.names)}
    w.backward(losses, [x], task_params=[])
    return x.grad


CONFLICT = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.3, 0.0], [0.1, -0.5, 2.0]])


def test_uncertainty_weights_follow_inverse_loss():
    """TorchJD's UW: L = sum exp(-s_i) L_i + s_i; for constant L_a = 1, L_b = 4 the optimum is exp(s_i) = L_i."""
    u = build("uncertainty")
    opt = torch.optim.Adam(u.parameters(), lr=0.05)
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(4.0)}
    for _ in range(600):
        opt.zero_grad()
        u.backward(losses, shared=[])
        opt.step()
    w = u.weights()
    assert w["a"] / w["b"] == pytest.approx(4.0, rel=0.05)


def test_pcgrad_projection_of_opposed_gradients():
    # g1' = g1 - (g1.g2/|g2|^2) g2 = [0.5, 0.5]; g2' = g2 - (g2.g1/|g1|^2) g1 = [0, 1]
    assert torch.allclose(toy_step(build("pcgrad"), torch.tensor([[1.0, 0.0], [-1.0, 1.0]])), torch.tensor([0.5, 1.5]))
    # no conflict: the plain sum
    assert torch.allclose(toy_step(build("pcgrad"), torch.tensor([[1.0, 0.0], [1.0, 1.0]])), torch.tensor([2.0, 1.0]))


def test_upgrad_update_agrees_with_every_task():
    d = toy_step(build("upgrad", names="abc"), CONFLICT)
    assert (CONFLICT @ d >= -1e-5).all()
    assert float(CONFLICT[0] @ CONFLICT.sum(0)) < 0  # where the plain sum of the rows would hurt task a


def test_mgda_is_the_min_norm_point_of_the_hull():
    d = toy_step(build("mgda", names="abc", epsilon=1e-6, max_iters=10000), CONFLICT)
    # d = sum a_i g_i with a in the simplex is the min-norm point iff g_i . d >= |d|^2 for every i
    assert (CONFLICT @ d >= d @ d - 1e-3).all()
    w = torch.linalg.lstsq(CONFLICT.T, d).solution
    assert (w >= -1e-3).all() and float(w.sum()) == pytest.approx(1.0, abs=1e-3)


def test_imtl_g_has_equal_projections_on_every_task():
    d = toy_step(build("imtl_g", names="abc"), CONFLICT)
    proj = CONFLICT @ d / CONFLICT.norm(dim=1)
    assert torch.allclose(proj, proj.mean().expand(3), rtol=1e-3)


def test_nash_mtl_solves_the_bargaining_equations():
    w = build("nash_mtl", names="abc", update_weights_every=1, optim_niter=200)
    toy_step(w, CONFLICT)
    a = torch.tensor([w.weights()[n] for n in "abc"])
    gram = CONFLICT @ CONFLICT.T
    # Nash-MTL: (G a)_i = 1 / a_i for every i (up to the solver's tolerance and TorchJD's max_norm scaling)
    prod = a * (gram @ a)
    assert (a > 0).all() and float(prod.std() / prod.mean()) < 0.05


def test_famo_weights_are_its_log_loss_gradient_and_learn_from_progress():
    f = build("famo")
    x = torch.zeros(2, requires_grad=True)
    losses = {"a": 2.0 + x[0], "b": 0.5 + x[1]}
    f.backward(losses, [x])
    w = f.weights()  # c * z_i / L_i with z uniform: proportional to 1 / L_i
    assert w["a"] / w["b"] == pytest.approx(0.25, rel=1e-4)
    # after the step, a fell by half and b not at all: FAMO raises b's logit
    f.after_step({"a": torch.tensor(1.0), "b": torch.tensor(0.5)})
    logits = f.method._w.detach()
    assert logits[1] > logits[0]


def test_dwa_favours_the_slower_task():
    d = build("dwa", names=["fast", "slow"], temperature=2.0)
    x = torch.zeros(2, requires_grad=True)

    def epoch(fast, slow):
        d.backward({"fast": fast + x[0], "slow": slow + x[1]}, [x])
        d.epoch_end({})

    epoch(1.0, 1.0)
    epoch(0.5, 1.0)
    d.backward({"fast": 0.5 + x[0], "slow": 1.0 + x[1]}, [x])
    w = d.weights()
    expected_slow = 2 * math.exp(1.0 / 2) / (math.exp(0.5 / 2) + math.exp(1.0 / 2))
    assert w["slow"] == pytest.approx(expected_slow, rel=1e-5) and w["slow"] + w["fast"] == pytest.approx(2.0)


def test_geometric_mean_and_stch_weights():
    x = torch.zeros(2, requires_grad=True)
    g = build("geometric_mean")
    g.backward({"a": 1.0 + x[0], "b": 4.0 + x[1]}, [x])
    # d/dL_i (L_a L_b)^(1/2) = (L_a L_b)^(1/2) / (2 L_i)
    assert g.weights() == pytest.approx({"a": 1.0, "b": 0.25})
    s = build("stch", mu=0.01)  # smooth Tchebycheff: as mu -> 0 the weight (lambda = 1/m) goes to the largest loss
    s.backward({"a": 1.0 + x[0], "b": 4.0 + x[1]}, [x])
    assert s.weights()["b"] == pytest.approx(0.5, abs=1e-3) and s.weights()["a"] == pytest.approx(0.0, abs=1e-3)


def test_rlw_draws_fresh_positive_weights_each_step():
    r = build("rlw")
    x = torch.zeros(2, requires_grad=True)
    seen = []
    for _ in range(3):
        r.backward({"a": 1.0 + x[0], "b": 1.0 + x[1]}, [x])
        seen.append(r.weights())
    assert all(v > 0 for w in seen for v in w.values()) and seen[0] != seen[1]
    assert sum(seen[0].values()) == pytest.approx(1.0, rel=1e-5)


def test_aggregated_matches_the_unscaled_update_under_a_grad_scaler():
    """Under AMP the GradScaler multiplies the losses; the Jacobian is unscaled before aggregation
    and the update scaled back, so after unscale_ the gradients equal those of an fp32 step."""
    for name in ("upgrad", "fairgrad", "cagrad"):
        plain = toy_step(build(name, names="abc"), CONFLICT)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        x = torch.zeros(3, requires_grad=True)
        opt = torch.optim.SGD([x], lr=1.0)
        build(name, names="abc").backward({n: CONFLICT[i] @ x + 1.0 for i, n in enumerate("abc")}, [x], scaler.scale,
                                          task_params=[])
        assert torch.allclose(x.grad, plain * 1024.0, rtol=1e-4), name
        scaler.unscale_(opt)
        assert torch.allclose(x.grad, plain, rtol=1e-4), name


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
        w.backward(losses, list(model.encoder.parameters()), task_params=list(model.heads.parameters()))
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        total = float(sum(losses.values()))
        first = first if first is not None else total
        if w.wants_losses_after_step:
            with torch.no_grad():
                out = model(x)
                w.after_step({"m": torch.nn.functional.binary_cross_entropy_with_logits(out["m"][:, 0], mask),
                              "c": torch.nn.functional.cross_entropy(out["c"], label)})
        w.epoch_end({k: float(v) for k, v in losses.items()})
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert total < first
    assert set(w.weights()) == {"m", "c"}


@pytest.mark.parametrize("name", ["dwa", "famo", "uncertainty", "imtl_l"])
def test_strategy_state_survives_a_checkpoint(name, tmp_path):
    """TorchJD keeps DWA's epoch averages and FAMO's Adam in plain attributes: a resumed run
    (checkpoints load with weights_only=True) continues with the same weights."""
    def make():
        return build(name)

    w = make()
    x = torch.zeros(2, requires_grad=True)
    for i in range(3):
        w.backward({"a": 1.0 + 0.1 * i + x[0], "b": 2.0 + x[1]}, [x])
        if w.wants_losses_after_step:
            w.after_step({"a": torch.tensor(0.9), "b": torch.tensor(2.0)})
        w.epoch_end({})
    torch.save({"weighting": w.state_dict()}, tmp_path / "c.pt")
    w2 = make()
    w2.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["weighting"])
    for s in (w, w2):
        s.backward({"a": 1.5 + x[0], "b": 2.0 + x[1]}, [x])
    assert w.weights() == pytest.approx(w2.weights())


def test_leave_out_keeps_a_head_out_of_the_aggregation():
    """MGDA with ``leave_out: [c]``: the shared update is MGDA's min-norm point of the other heads'
    gradients (c's gradient is not in the hull, so a near-zero c can no longer take all the weight),
    and c's loss still trains c's own parameter."""
    near_zero = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.3, 0.0], [1e-6, 0.0, 0.0]])
    plain = toy_step(build("mgda", names="abc", epsilon=1e-6, max_iters=10000), near_zero)
    assert plain.norm() < 1e-4  # MGDA's collapse: the near-zero head is the min-norm point
    w = build("mgda", names="abc", epsilon=1e-6, max_iters=10000, leave_out=["c"])
    x = torch.zeros(3, requires_grad=True)
    own = torch.zeros(1, requires_grad=True)  # c's own parameter
    losses = {n: near_zero[i] @ x + 1.0 for i, n in enumerate("ab")}
    losses["c"] = near_zero[2] @ x + 3.0 * own.sum() + 1.0
    w.backward(losses, [x], task_params=[own])
    ab = near_zero[:2]
    two = toy_step(build("mgda", names="ab", epsilon=1e-6, max_iters=10000), ab)
    assert torch.allclose(x.grad, two, atol=1e-4) and x.grad.norm() > 0.05
    assert own.grad is not None and float(own.grad) == pytest.approx(3.0)
    assert w.weights()["c"] == 0.0 and w.weights()["a"] > 0


@pytest.mark.parametrize("bad", [["nope"], ["a", "b"]])
def test_leave_out_names_some_heads(bad):
    with pytest.raises(ValueError, match="leave_out must name some, not all, of the heads"):
        build("upgrad", names="ab", leave_out=bad)

"""Multi-task architectures, over the registry: each keeps the encoder's feature contract, splits its
parameters into shared and per-head ones truthfully, has its defining property, trains under every
kind of strategy, survives save/load, and gives both torchrun ranks the same model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from conftest import foreground_task, write_registry
from zoo.core.architectures import CGC, MTAN, HardSharing

REG = zoo.load_registry()
ARCHITECTURES = REG.names("architectures")
HEADS = {"mask": "binary_mask", "digit": "classification", "seg": "segmentation"}


def build(arch: str, encoder: str = "scratch", heads: dict = HEADS, **enc) -> zoo.MultiTaskModel:
    torch.manual_seed(0)
    settings = {"width": 4, "depth": 3, **enc} if encoder == "scratch" else enc
    return zoo.build_model(encoder, heads, encoder_settings=settings, architecture=arch)


def test_the_registry_has_hard_sharing_mtan_and_an_expert_design_each_with_its_paper():
    assert {"hard_sharing", "mtan", "cgc", "mmoe"} <= set(ARCHITECTURES)
    for name in ARCHITECTURES:
        assert REG.entry("architectures", name).spec.get("paper"), name


@pytest.mark.parametrize("encoder", ["scratch", "mobilenetv3_small_100"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_features_keep_the_encoder_contract_and_parameters_split_truthfully(arch, encoder):
    # (two heads on the timm encoder: a CPU pays ~40 ms for each conv's first call, and CGC has many)
    heads = HEADS if encoder == "scratch" else {"mask": "binary_mask", "digit": "classification"}
    model = build(arch, encoder, heads, input_skip=True)
    x = torch.rand(2, 1, 32, 32)
    feats = model.encoder(x)
    for head in heads:
        mine = model.architecture(feats, head)
        assert [f.shape for f in mine] == [f.shape for f in feats]
        assert torch.equal(mine[0], x)  # the raw input level reaches the heads unchanged
    shared = {id(p) for p in model.architecture.shared_parameters()}
    own = {id(p) for p in model.architecture.task_parameters()}
    assert not shared & own and shared | own == {id(p) for p in model.architecture.parameters()}
    out = model(x)
    assert set(out) == set(heads) and all(torch.isfinite(v).all() for v in out.values())
    # what one head's loss reaches: never another head's modules
    for head in heads:
        model.zero_grad(set_to_none=True)
        model(x, heads=[head])[head].float().square().mean().backward()
        for other in heads:
            grads = [p.grad for m in model.architecture.task_modules(other) for p in m.parameters()]
            if other == head:
                continue
            assert all(g is None or not g.any() for g in grads), (arch, head, other)


def test_hard_sharing_is_the_identity_with_no_parameters():
    model = build("hard_sharing")
    assert isinstance(model.architecture, HardSharing) and not list(model.architecture.parameters())
    assert sorted(model.state_dict()) == sorted(zoo.build_model("scratch", HEADS, encoder_settings={
        "width": 4, "depth": 3}).state_dict())  # state dicts of models from before architectures still load


def test_mtan_masks_are_in_0_1_per_head_and_attend_the_shared_features():
    model = build("mtan")
    arch = model.architecture
    assert isinstance(arch, MTAN)
    x = torch.rand(3, 1, 28, 28)
    feats = model.encoder(x)
    masks = {h: arch.masks(feats, h) for h in HEADS}
    for h, ms in masks.items():
        assert len(ms) == len(feats)
        for m, f in zip(ms, feats):
            assert m.shape == f.shape and m.min() >= 0 and m.max() <= 1
        attended = arch(feats, h)
        assert all(torch.allclose(a, m * f) for a, m, f in zip(attended, ms, feats))
    assert not torch.allclose(masks["mask"][0], masks["digit"][0])  # each head has its own attention
    assert arch.attention["mask"] is not arch.attention["digit"]


def test_cgc_gates_mix_shared_and_own_experts_and_mmoe_has_no_own():
    model = build("cgc")
    arch = model.architecture
    assert isinstance(arch, CGC)
    x = torch.rand(3, 1, 28, 28)
    feats = model.encoder(x)
    for h in HEADS:
        for g in arch.gate(feats, h):
            assert g.shape == (3, 3) and torch.allclose(g.sum(1), torch.ones(3))  # 2 shared + 1 own
    # at the deepest level (every head reads it): a shared expert hears every head's loss, a head's
    # own expert only its own
    for e in arch.shared[-1]:  # (zero-initialised last BatchNorm: move it so gradients flow back)
        torch.nn.init.ones_(e[-1].weight)
    for hh in HEADS:
        torch.nn.init.ones_(arch.own[hh][-1][0][-1].weight)
    for head in HEADS:
        model.zero_grad(set_to_none=True)
        model(x, heads=[head])[head].float().square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for e in arch.shared[-1] for p in e[0].parameters())
        for other in HEADS:
            expert = list(arch.own[other][-1][0][0].parameters())
            heard = any(p.grad is not None and p.grad.abs().sum() > 0 for p in expert)
            assert heard == (other == head), (head, other)
    mmoe = build("mmoe").architecture
    assert not list(mmoe.own.parameters()) and mmoe.gate(feats, "mask")[0].shape == (3, 3)
    # experts start by adding nothing: at initialisation every head reads the shared features
    fresh = build("cgc")
    assert all(torch.allclose(a, f) for a, f in zip(fresh.architecture(feats, "mask"), feats))


@pytest.mark.parametrize("weighting", ["fixed", "upgrad", "uncertainty"])
@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "hard_sharing"])
def test_every_architecture_trains_under_each_kind_of_strategy(tiny_mnist, arch, weighting):
    """A few epochs on tiny data: the training loss falls, everything is finite, and the shared
    architecture modules are in the Jacobian methods' shared set (they move)."""
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit

    cfg = RunConfig(task="circlization", encoder="scratch", weighting=weighting, architecture=arch, epochs=3,
                    batch_size=16, lr=3e-3, train_limit=96, test_limit=16, data_root=str(tiny_mnist),
                    encoder_settings={"width": 4, "depth": 2})
    before = {k: v.clone() for k, v in zoo.build_model(
        "scratch", {"digit": "classification", "circle": "circle"}, encoder_settings={"width": 4, "depth": 2},
        architecture=arch).architecture.state_dict().items()}
    r = fit(cfg, show_progress=False)
    losses = [h["train_loss"] for h in r.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    after = r.model.architecture.state_dict()
    assert set(after) == set(before)
    assert all(torch.isfinite(v.float()).all() for v in r.model.state_dict().values())


def test_an_architecture_run_is_its_own_row_and_reloads(tiny_mnist, tmp_path, capsys):
    from zoo.bench import main

    common = ["--task", "circlization", "--encoder", "scratch", "--epochs", "1", "--train-limit", "64",
              "--test-limit", "16", "--encoder-arg", "width=4", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
              "--quiet", "--no-figures", "--no-speed"]
    assert main(common) == 0
    assert main([*common, "--architecture", "mtan"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert sorted(r.get("architecture", "-") for r in rows) == ["-", "mtan"]  # hard sharing rows name none
    assert "| scratch | fixed | mtan |" in (tmp_path / "results.md").read_text()
    mtan = next(r for r in rows if r.get("architecture") == "mtan")
    assert "-mtan-" in Path(mtan["run_dir"]).name
    model = zoo.load_model(Path(mtan["run_dir"]) / "best.pt")
    assert isinstance(model.architecture, MTAN)
    folder = zoo.save_pretrained(model, tmp_path / "hub")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), zoo.from_pretrained(folder)(x).values()))
    capsys.readouterr()
    assert main([*common, "--architecture", "mtna"]) == 2
    assert "unknown architecture 'mtna'" in capsys.readouterr().err


@pytest.mark.parametrize("arg,expect", [
    ("raw_levels=0", "come from the encoder and the task's heads"),
    ("heads=[a]", "come from the encoder and the task's heads"),
    ("experts=3", "unknown setting(s) 'experts'"),
    ("detach=[digit,circle]", "some, not all, of the heads of task 'circlization': ['digit', 'circle']"),
    ("detach=[mask]", "some, not all, of the heads"),
    ("detach=digit", "some, not all, of the heads"),
    ("detach=[digit,digit]", "some, not all, of the heads"),
])
def test_bad_architecture_settings_are_one_line_before_any_data(tmp_path, capsys, arg, expect):
    from zoo.bench import main

    rc = main(["--task", "circlization", "--architecture", "cgc", "--architecture-arg", arg, "--data-root",
               str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 2 and "Traceback" not in err and expect in err and "no-data" not in err, err


@pytest.mark.parametrize("weighting", ["mgda", "upgrad", "gradnorm"])
def test_detach_is_refused_with_strategies_that_weigh_encoder_gradients(tmp_path, capsys, weighting):
    """A detached head's encoder gradient is zero: MGDA's min-norm point would be zero and the encoder
    would never move. Such strategies are refused by name (with leave_out as the way), before any data."""
    from zoo.bench import main

    rc = main(["--task", "circlization", "--weighting", weighting, "--architecture-arg", "detach=[digit]",
               "--data-root", str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--quiet", "--no-baselines"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 2 and "Traceback" not in err and f"weighting {weighting!r} weighs the heads' gradients" in err, err


def test_detach_with_leave_out_is_accepted_by_a_jacobian_method(tmp_path, capsys):
    from zoo.bench import main

    rc = main(["--task", "circlization", "--weighting", "mgda", "--architecture-arg", "detach=[digit]",
               "--weighting-arg", "leave_out=[digit]", "--data-root", str(tmp_path / "no-data"), "--out",
               str(tmp_path / "o"), "--quiet", "--no-baselines"])
    err = capsys.readouterr().err
    assert rc == 2 and "weighs the heads' gradients" not in err and "MNIST not found" in err, err


HISTOGRAM_ONLY = {"tasks": {"fg_hist": foreground_task(
    heads={"mask": {"head": "threshold_mask", "settings": {"encoder_features": False}},
           "digit": {"head": "classification", "settings": {"num_classes": 10}, "loss": "ce", "target": "label"}},
    monitor="iou", budget={"epochs": 1, "batch_size": 16, "lr": 0.003, "encoder_settings": {"input_skip": True}})}}


@pytest.mark.parametrize("extra,refused", [([], True), (["--weighting-arg", "leave_out=[mask]"], False)])
def test_an_input_only_head_is_refused_by_mgda_unless_left_out(tiny_mnist, tmp_path, capsys, extra, refused):
    """A head set to read only the input has a zero encoder gradient: MGDA would stop the encoder.
    The run is refused before its first step, naming the head and leave_out; with leave_out it trains."""
    from zoo.bench import main

    reg = write_registry(tmp_path, HISTOGRAM_ONLY)
    rc = main(["--task", "fg_hist", "--registry", str(reg), "--weighting", "mgda", *extra, "--data-root",
               str(tiny_mnist), "--out", str(tmp_path / "o"), "--quiet", "--no-baselines", "--no-figures",
               "--no-speed", "--train-limit", "64", "--test-limit", "64"])
    err = capsys.readouterr().err.replace("\n", " ")
    if refused:
        assert rc == 2 and "head(s) ['mask'] (a head setting makes them read only the input)" in err, err
        assert "leave_out=[mask]" in err and "Traceback" not in err and not list((tmp_path / "o").glob("*/*.pt"))
    else:
        assert rc == 0, err


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_detached_head_trains_itself_but_never_the_encoder(arch):
    """``detach: [mask]``: the mask loss reaches the mask head (and its architecture modules), not one
    encoder parameter; another head's loss still trains the encoder; the outputs are unchanged."""
    plain = build(arch, input_skip=True)
    torch.manual_seed(0)
    model = zoo.build_model("scratch", HEADS, encoder_settings={"width": 4, "depth": 3, "input_skip": True},
                            architecture=arch, architecture_settings={"detach": ["mask"]})
    model.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(plain(x).values(), model(x).values()))
    model(x, heads=["mask"])["mask"].square().mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.heads["mask"].parameters())
    own = [p for m in model.architecture.task_modules("mask") for p in m.parameters()]
    assert all(p.grad is not None for p in own)
    model.zero_grad(set_to_none=True)
    model(x, heads=["seg"])["seg"].square().mean().backward()
    assert any(p.grad is not None and p.grad.any() for p in model.encoder.parameters())


def test_hard_sharing_baselines_are_planned_whatever_the_asked_architecture(tmp_path):
    from zoo.bench import parse_args
    from zoo.runs.plan import plan_jobs

    args = parse_args(["--task", "foreground,joint", "--architecture", "mtan", "--out", str(tmp_path)])
    jobs = plan_jobs(args, REG, "default", tmp_path)
    base = [(j.cfg.task, j.cfg.weighting, j.cfg.architecture) for j in jobs if j.cfg.architecture == "hard_sharing"]
    assert sorted(base) == [("circlization", "fixed", "hard_sharing"), ("foreground", "fixed", "hard_sharing"),
                            ("semantic", "fixed", "hard_sharing")]
    assert [(j.cfg.task, j.cfg.architecture) for j in jobs[-2:]] == [("foreground", "mtan"), ("joint", "mtan")]


def test_torchrun_gives_both_ranks_the_same_cgc_model(tiny_mnist, tmp_path):
    """CGC (shared experts outside the encoder) under a Jacobian method and a loss-based one: two gloo
    processes end with identical models and strategy state."""
    from test_mtl_ddp import torchrun_fits

    r0, r1 = torchrun_fits(tmp_path, tiny_mnist, ["upgrad", "uncertainty"], architecture="cgc")
    assert r0 == r1 and set(r0) == {"upgrad", "uncertainty"}

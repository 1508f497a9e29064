"""Every registered encoder x head, tested by being registered (timm's tests/test_models.py style)."""
from __future__ import annotations

import os

import pytest
import torch

import zoo
from conftest import assert_clear, run_cli
from zoo.core.registry import RegistryError

REG = zoo.load_registry()
ENCODERS = REG.names("encoders") + ["timm:efficientnet_b0", "scratch+input_skip", "resnet18+input_skip"]
HEADS = REG.names("heads")
HEAD_SETTINGS = {"circle": [{"mode": "fit"}, {"mode": "regress"}]}


def head_cases():
    for h in HEADS:
        for s in HEAD_SETTINGS.get(h, [{}]):
            yield pytest.param(h, s, id=f"{h}{'-' + s['mode'] if s else ''}")


@pytest.fixture(scope="module", params=ENCODERS)
def encoder(request):
    torch.manual_seed(0)
    name, _, variant = request.param.partition("+")
    entry = REG.entry("encoders", name)
    settings = {**entry.settings, **({variant: True} if variant else {})}
    return request.param, entry.obj(**settings)


def test_encoder_contract(encoder):
    name, enc = encoder
    x = torch.randn(2, 1, 32, 32)
    feats = enc(x)
    assert isinstance(feats, list) and len(feats) == len(enc.out_channels) == len(enc.reductions)
    assert [f.shape[1] for f in feats] == enc.out_channels, "declared channels match the real features"
    assert [32 // f.shape[-1] for f in feats] == enc.reductions, "declared reductions match the real strides"
    assert enc.reductions == sorted(enc.reductions), "high to low resolution"


@pytest.mark.parametrize("head,settings", list(head_cases()))
def test_encoder_head(encoder, head, settings):
    name, enc = encoder
    if REG.entry("heads", head).obj.needs_input_skip and not enc.input_skip:
        with pytest.raises(RegistryError, match="input_skip: true"):
            zoo.build_model(name.partition("+")[0], {"out": {"head": head, "settings": settings}})
        return
    h = REG.build("heads", head, channels=enc.out_channels, reductions=enc.reductions, **settings)
    model = zoo.MultiTaskModel(enc, {"out": h})
    model.train()
    x = torch.rand(2, 1, 28, 28)  # 28 is not a multiple of any encoder's stride: pad, then crop
    out = model(x)
    assert isinstance(out, dict) and list(out) == ["out"]
    y = out["out"]
    assert torch.isfinite(y).all()
    if y.dim() == 4:
        assert y.shape[0] == 2 and y.shape[-2:] == (28, 28)
    pred = model.predict(out, size=(28, 28))["out"]
    assert pred.shape[0] == 2
    y.float().pow(2).mean().backward()
    missing = [n for n, p in h.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"head parameters without a finite gradient: {missing}"
    enc_missing = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    # Encoder layers a head does not read (e.g. the deepest level for a regress-only head) are
    # fine; every encoder parameter must get a gradient from a dense head, which reads them all.
    if head in ("binary_mask", "segmentation") or settings.get("mode") == "fit":
        assert not enc_missing, f"encoder parameters without gradient: {enc_missing[:5]}"


@pytest.mark.parametrize("enc_name", ["scratch", "resnet18"])
def test_multi_head_model_rgb_and_odd_sizes(enc_name):
    model = zoo.build_model(enc_name, {"mask": "binary_mask", "seg": {"head": "segmentation", "settings": {"num_classes": 5}},
                                       "cls": "classification", "circle": "circle"}, in_channels=3)
    out = model(torch.rand(1, 3, 37, 45))
    assert out["mask"].shape == (1, 1, 37, 45) and out["seg"].shape == (1, 5, 37, 45)
    assert out["cls"].shape == (1, 10) and out["circle"].shape == (1, 1, 37, 45)
    assert list(model(torch.rand(1, 3, 37, 45), heads=["cls"])) == ["cls"]


def test_circle_with_mode_regress_is_the_circle_regress_head():
    """``{head: circle, settings: {mode: regress}}``, what registry files and checkpoints from before the two circle
    heads were split name, builds the ``circle_regress`` head: its class, parameters and output; both copy."""
    import copy

    from zoo.heads.circle import CircleHead, CircleRegressHead

    enc = REG.build("encoders", "scratch", width=4, depth=2, input_skip=True)
    built = []
    for head, settings in (("circle", {"mode": "regress"}), ("circle_regress", {})):
        torch.manual_seed(0)
        built.append(REG.build("heads", head, channels=enc.out_channels, reductions=enc.reductions, **settings))
    old, new = built
    assert type(old) is type(new) is CircleRegressHead and old.state_dict().keys() == new.state_dict().keys()
    feats = enc(torch.rand(2, 1, 28, 28))
    assert torch.equal(old(feats), new(feats))
    fit = REG.build("heads", "circle", channels=enc.out_channels, reductions=enc.reductions)
    assert type(fit) is CircleHead and type(copy.deepcopy(fit)) is CircleHead
    assert (CircleHead.output_for({"mode": "regress"}), CircleHead.defaults({"mode": "regress"})) == (
        "circle", ("circle_l1", "circle"))


def test_model_bad_inputs():
    model = zoo.build_model("scratch", {"mask": "binary_mask"})
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(28, 28))
    with pytest.raises(ValueError, match="unknown head"):
        model(torch.rand(1, 1, 28, 28), heads=["nope"])
    with pytest.raises(RegistryError, match="unknown head 'binary_mak'.*Did you mean 'binary_mask'"):
        zoo.build_model("scratch", {"mask": "binary_mak"})
    with pytest.raises(ValueError, match="circle head mode"):
        zoo.build_model("scratch", {"c": {"head": "circle", "settings": {"mode": "square"}}})
    with pytest.raises(ValueError, match="num_classes"):
        zoo.build_model("scratch", {"c": {"head": "classification", "settings": {"num_classes": 1}}})


def test_local_pretrained_weights(tmp_path):
    src = zoo.build_model("resnet18", {"c": "classification"}).encoder
    path = tmp_path / "r18.pth"
    torch.save(src.model.state_dict(), path)
    reg = zoo.load_registry()
    enc = reg.build("encoders", "resnet18", pretrained=str(path))
    k = next(iter(src.model.state_dict()))
    assert torch.equal(enc.model.state_dict()[k], src.model.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="does not exist; .pretrained. takes a local file path"):
        reg.build("encoders", "resnet18", pretrained=str(tmp_path / "missing.pth"))


class _Boom:  # a pickle that would run code when loaded
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("make,expect", [
    (lambda p: torch.save({"w": _Boom()}, p), "cannot be loaded: refused or unreadable"),
    (lambda p: p.write_bytes(b"\x80\x04garbage"), "cannot be loaded: refused or unreadable"),
    (lambda p: torch.save([1, 2, 3], p), "holds a list, not a state dict of tensors"),
], ids=["malicious-pickle", "corrupt", "not-a-state-dict"])
def test_bad_pretrained_encoder_files(tiny_mnist, tmp_path, capsys, make, expect):
    f = tmp_path / "w.pth"
    make(f)
    rc, err = run_cli(["--task", "foreground", "--encoder", "resnet18", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o"), "--encoder-arg", f"pretrained={f}"], capsys)
    assert_clear(rc, err, f"pretrained weights file {f}", expect)


def test_python_api_wrong_channel_count():
    import zoo

    model = zoo.build_model("scratch", {"mask": "binary_mask"}, in_channels=1).eval()
    with pytest.raises(ValueError, match=r"input has 3 channel\(s\) \(shape \(2, 3, 28, 28\)\), but this model's "
                                         r"encoder takes 1: give \[B, 1, H, W\]"):
        model(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize("head,settings", list(head_cases()))
def test_head_declares_its_contract(head, settings):
    """Every registered head is a zoo Head: its flags are declared on the class, shift_output undoes a
    roll of its output, check_output accepts its own output against a target of the right shape, and
    figure_panels draws it without guessing."""
    cls = REG.entry("heads", head).obj
    assert issubclass(cls, zoo.Head)
    enc = REG.build("encoders", "scratch", width=4, input_skip=True)
    h = REG.build("heads", head, channels=enc.out_channels, reductions=enc.reductions, **settings).eval()
    x = torch.rand(2, 1, 28, 28)
    feats = enc(x)
    out = h(feats, size=(28, 28)) if h.needs_input_size else h(feats)
    if out.dim() == 4:
        rolled = torch.roll(out, (1, -2), (2, 3))
        assert torch.equal(h.shift_output(rolled, 1, -2), out)
        if h.output_kind == "dense_values":  # a float target per channel, NaN where invalid
            assert h.check_output(out, torch.full_like(out, float("nan"))) is None
            assert h.check_output(out, torch.zeros(2, 28, 28, dtype=torch.long)) is not None
            assert torch.equal(h.flip_output(torch.flip(out, (3,)), 28)[:, 1:], out[:, 1:])
        else:
            target = torch.zeros(2, 28, 28, dtype=torch.long)
            assert h.check_output(out, target) is None
        assert h.check_output(out, torch.zeros(2, 14, 14, dtype=torch.long)) is not None
    elif h.output_kind == "circle":  # (circle_regress, or circle with mode: regress)
        assert torch.allclose(h.shift_output(out + out.new_tensor([-2, 1, 0]), 1, -2), out)
        assert h.check_output(out, torch.zeros(2, 3)) is None
    else:
        assert h.check_output(out, torch.zeros(2, dtype=torch.long)) is None
        assert h.check_output(out, torch.zeros(2, 28, 28, dtype=torch.long)) is not None
    pred = h.predict(out, size=(28, 28))
    sample = {"image": x[0], "mask": torch.zeros(28, 28, dtype=torch.long), "label": torch.tensor(3),
              "circle_mask": torch.zeros(28, 28, dtype=torch.long), "circle": torch.zeros(3)}
    target = "label" if pred.dim() == 1 else "mask"
    if h.output_kind == "dense_values":  # pictures in one colour scale, the truth's (invalid pixels NaN)
        target, sample["values"] = "values", torch.where(torch.rand(out.shape[1:]) < 0.5, 1.0, float("nan"))
        title, panels = h.figure_panels(sample, pred[0], target)
        assert len(panels) == 2 and all(p.shape == (28, 28, 3) for p, _ in panels)
        return
    title, panels = h.figure_panels(sample, pred[0], target)
    assert (title and not panels) if pred.dim() == 1 else (len(panels) == 2 and panels[1][0].shape == (28, 28))

"""The registered decoders (issue 37): every decoder on every test encoder under every dense head, their
one-line refusals, equality with smp's own models, and ONNX export. Parametrized over the registry, so a
new decoder is tested by registering it."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from conftest import foreground_task, write_registry
from zoo.core.registry import RegistryError
from zoo.engine.build import task_spec
from zoo.heads.smp_decoders import SMP_TWIN
from zoo.engine.record import hand_record

REG = zoo.load_registry()
DECODERS = REG.names("decoders")
BUILTIN = {e.name for e in REG.entries("decoders") if e.target.startswith("zoo.heads.")}  # zoo's own (smp's)
# one head of each dense output kind (test_the_dense_heads_cover_every_dense_output_kind keeps it so): normals
# stands for the per-pixel values, whose depth and dense_regression are its class with another constraint
DENSE_HEADS = ["binary_mask", "segmentation", "normals"]
# nothing is downloaded: the timm encoders are built without weights (pretrained is never set)
ENCODERS = {"scratch": {"width": 8}, "resnet18": {}, "mobilenetv3_small_100": {},
            # the transformer path, shrunk for the CPU: a ViT's single-stride token maps (four blocks, as DPT
            # reads them) and a Swin's channels-last pyramid at strides 4-32
            "timm:vit_tiny_patch16_224": {"depth": 4, "embed_dim": 48, "num_heads": 2, "out_indices": [0, 1, 2, 3]},
            "timm:swin_tiny_patch4_window7_224": {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}}


# DPT's default widths (256-1024 per level) are ViT-Base's: narrower for a ViT shrunk to 48 channels
SMALL = {"dpt": {"intermediate_channels": [32, 32, 32, 32], "fusion_channels": 32}}


def _refusal(decoder: str, encoder: str, settings: dict) -> str | None:
    """What the decoder's own declaration says about the encoder's levels (None: it serves them)."""
    with torch.device("meta"):
        enc = REG.build("encoders", encoder, **settings)
    return REG.entry("decoders", decoder).obj.refuse(enc.out_channels, enc.reductions)


#: which decoders refuse which test encoder, by hand from what each decoder reads (README, "Decoders"): a pyramid
#: of doubling strides serves every decoder but DPT (a ViT's); DeepLabV3+ needs a dilated encoder (output stride 8
#: or 16); a ViT's levels are all at stride 16 (DPT, and the decoders that upsample any stride: unet, pspnet,
#: deeplabv3); Swin starts at stride 4, so the decoders that read a stride-2 level (linknet, manet, unetplusplus)
#: cannot serve it. A decoder that wrongly refuses (or serves) an encoder fails here, not only its own test.
REFUSED = {"scratch": {"dpt"}, "resnet18": {"dpt", "deeplabv3plus"}, "mobilenetv3_small_100": {"dpt", "deeplabv3plus"},
           "timm:vit_tiny_patch16_224": {"deeplabv3plus", "fpn", "linknet", "manet", "pan", "segformer",
                                         "unetplusplus", "upernet"},
           "timm:swin_tiny_patch4_window7_224": {"dpt", "deeplabv3plus", "linknet", "manet", "unetplusplus"}}


def test_each_decoder_serves_the_encoders_it_should():
    """The registered decoders' refusals, against the hand-made table above (built-in decoders only: a user's
    own is checked by the parametrized test below, by its own declaration)."""
    for encoder, settings in ENCODERS.items():
        got = {d for d in BUILTIN if _refusal(d, encoder, settings) is not None}
        assert got == REFUSED[encoder], encoder


def test_the_dense_heads_cover_every_dense_output_kind():
    from zoo.heads.dense import DenseHead

    kinds = {e.obj.output_kind for e in REG.entries("heads") if issubclass(e.obj, DenseHead)}
    assert {REG.entry("heads", h).obj.output_kind for h in DENSE_HEADS} == kinds == \
        {"binary_mask", "dense_classes", "dense_values"}


def _head(head: str, decoder: str, settings: dict | None = None) -> dict:
    s = {"decoder": decoder, **({"decoder_settings": settings} if settings else {})}
    return {"head": head, "settings": {**s, **({"num_classes": 3} if head == "segmentation" else {})}}


def _one_line_error(exc: pytest.ExceptionInfo, *names: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in names), msg
    return msg


def test_the_registry_lists_every_decoder_with_its_paper(capsys):
    from zoo.bench import main

    assert {"unet", "unetplusplus", "fpn", "pspnet", "deeplabv3", "deeplabv3plus", "linknet", "manet", "pan",
            "upernet", "segformer", "dpt"} <= set(DECODERS)
    assert all(e.spec.get("paper") for e in REG.entries("decoders"))
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "decoders" in out and "SegFormer" in out


@pytest.mark.parametrize("head", DENSE_HEADS)
@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_gives_the_input_size_and_trains_or_refuses_in_one_line(decoder, encoder, head):
    settings = ENCODERS[encoder]
    reason = _refusal(decoder, encoder, settings)
    if reason is not None:
        with pytest.raises(RegistryError) as exc:
            zoo.build_model(encoder, {"out": _head(head, decoder)}, encoder_settings=settings)
        _one_line_error(exc, repr(decoder), repr(encoder), reason)
        return
    torch.manual_seed(0)
    model = zoo.build_model(encoder, {"out": _head(head, decoder, SMALL.get(decoder))},
                            encoder_settings=settings).train()
    # large squares that every decoder can place, even at stride 32; the size is no multiple of any stride
    target = torch.zeros(2, 44, 52, dtype=torch.long)
    target[0, 4:28, 6:30], target[1, 16:40, 20:44], target[1, 2:14, 2:14] = 1, 1, 2
    x = (target > 0).float().unsqueeze(1) * 0.6 + 0.4 * torch.rand(2, 1, 44, 52)
    if head == "binary_mask":
        loss_of = lambda out: F.binary_cross_entropy_with_logits(out[:, 0], (target > 0).float())  # noqa: E731
    elif head == "segmentation":
        loss_of = lambda out: F.cross_entropy(out, target)  # noqa: E731
    else:  # unit normals, one direction per square (the head's output is unit length)
        directions = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, 0.6, 0.8]])
        normals = directions[target].permute(0, 3, 1, 2)
        loss_of = lambda out: (1 - F.cosine_similarity(out, normals, dim=1)).mean()  # noqa: E731

    def measured() -> float:  # the same dropout draws before and after training
        torch.manual_seed(1)
        with torch.no_grad():
            out = model(x)["out"]
        assert out.shape == (2, {"binary_mask": 1, "segmentation": 3, "normals": 3}[head], 44, 52)
        return loss_of(out).item()

    before = measured()
    # (transformers train at a lower rate, as timm and smp train them)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 if encoder.startswith("timm:") else 3e-3)
    for _ in range(5):  # a batch of 2: some decoders' pooled BatchNorm cannot take one image
        loss = loss_of(model(x)["out"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = measured()
    assert np.isfinite(after) and after < before, (decoder, encoder, before, after)


@pytest.mark.parametrize("decoder,encoder,settings,expect", [
    ("dpt", "scratch", {"width": 8}, "ViT"),
    ("deeplabv3plus", "resnet18", {}, "output stride of 8 or 16"),
    ("fpn", "scratch", {"width": 8, "depth": 2}, "at least 3 levels"),
    ("pan", "scratch", {"width": 8, "depth": 3}, "at least 3 levels"),
    ("fpn", "resnet18", {"output_stride": 8}, "undilated"),
    ("unetplusplus", "resnet18", {"output_stride": 16}, "undilated"),
    ("fpn", "scratch", {"width": 8, "depth": 5, "output_stride": 8}, "undilated"),
])
def test_a_decoder_that_cannot_serve_an_encoder_is_one_line(decoder, encoder, settings, expect):
    with pytest.raises(RegistryError) as exc:
        zoo.build_model(encoder, {"m": _head("binary_mask", decoder)}, encoder_settings=settings)
    _one_line_error(exc, repr(decoder), repr(encoder), expect)


@pytest.mark.parametrize("settings,expect", [
    ({"decoder": "fpnn"}, "Did you mean 'fpn'"),
    ({"decoder": "fpn", "decoder_settings": {"pyramid": 64}}, "unknown setting(s) 'pyramid'; valid: pyramid_channels"),
    ({"decoder": "fpn", "decoder_settings": [64]}, "decoder_settings must be a mapping"),
    ({"decoder": "fpn", "decoder_channels": [16, 16, 16, 16]}, "unet decoder"),
    ({"decoder_channels": [16, 16, 16, 16], "decoder_settings": {"decoder_channels": [8, 8, 8, 8]}}, "given twice"),
])
def test_bad_decoder_names_and_settings_are_one_line(settings, expect):
    with pytest.raises(RegistryError) as exc:
        zoo.build_model("scratch", {"m": {"head": "binary_mask", "settings": settings}}, encoder_settings={"width": 8})
    _one_line_error(exc, expect)


def test_decoder_settings_reach_the_decoder_and_unet_stays_the_default():
    model = zoo.build_model("scratch", {"a": "binary_mask", "b": _head("binary_mask", "fpn", {"pyramid_channels": 24})},
                            encoder_settings={"width": 8})
    assert type(model.heads["a"].decoder).__name__ == "SkipDecoder"
    assert model.heads["b"].decoder.decoder.p5.out_channels == 24
    # the U-Net's state dict is the one from before decoders were registered (shipped models load unchanged)
    assert {"heads.a.segmentation_head.weight", "heads.a.decoder.decoder.blocks.0.conv1.0.weight"} <= set(
        model.state_dict())


def test_a_refused_decoder_in_a_task_is_one_line_before_any_data(tmp_path, capsys):
    from zoo.bench import main

    mask = {"head": "binary_mask", "settings": {"decoder": "dpt"}, "loss": "bce", "target": "mask"}
    reg = write_registry(tmp_path, {"tasks": {"fg_dpt": foreground_task(
        heads={"mask": mask}, monitor="iou", budget={"epochs": 1, "batch_size": 8, "lr": 0.001},
        quick={"epochs": 1, "batch_size": 8})}})
    rc = main(["--task", "fg_dpt", "--registry", str(reg), "--encoder", "scratch", "--data-root",
               str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 2 and "Traceback" not in err and "no-data" not in err, err
    assert "decoder 'dpt' cannot serve encoder 'scratch'" in err, err


def test_a_task_trained_with_a_decoder_reloads_with_it(tiny_mnist, tmp_path, capsys):
    """A decoder set in a task entry is trained, saved and rebuilt from the file (the caller's registry)."""
    import json
    from pathlib import Path

    from zoo.bench import main

    fpn = {"decoder": "fpn", "decoder_settings": {"pyramid_channels": 16, "segmentation_channels": 32}}
    reg = write_registry(tmp_path, {"tasks": {"fg_fpn": foreground_task(
        heads={"mask": {"head": "binary_mask", "settings": fpn, "loss": "bce", "target": "mask"}}, monitor="iou",
        budget={"epochs": 1, "batch_size": 16, "lr": 0.003}, quick={"epochs": 1, "batch_size": 16})}})
    assert main(["--task", "fg_fpn", "--registry", str(reg), "--encoder", "scratch", "--encoder-arg", "width=4",
                 "--train-limit", "64", "--test-limit", "16", "--data-root", str(tiny_mnist), "--out",
                 str(tmp_path / "o"), "--quiet", "--no-figures", "--no-speed"]) == 0
    capsys.readouterr()
    row = json.loads((tmp_path / "o" / "results.json").read_text())["rows"][0]
    model = zoo.load_model(Path(row["run_dir"]) / "best.pt", registry_files=[reg])
    head = model.heads["mask"]
    assert type(head.decoder).__name__ == "FPN" and head.decoder.decoder.p5.out_channels == 16
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert model(x)["mask"].shape == (2, 1, 28, 28)


def dense_task(**mask_head) -> dict:
    """Registry entries of task ``fg_dense``: one dense head, ``mask``, with ``mask_head`` in its entry."""
    return {"tasks": {"fg_dense": foreground_task(
        heads={"mask": {"head": "binary_mask", "loss": "bce", "target": "mask", **mask_head}}, monitor="iou",
        budget={"epochs": 1, "batch_size": 16, "lr": 0.003}, quick={"epochs": 1, "batch_size": 16})}}


def test_decoder_is_a_grid_axis_and_keys_its_rows(tiny_mnist, tmp_path, capsys):
    """--decoder sets every dense head's decoder; a row names it unless it is unet (older rows keep their
    key); a grid of decoders skips the rows it has; the model reloads with its decoder."""
    import json
    from pathlib import Path

    from zoo.bench import main
    from zoo.runs.keys import row_key

    reg = write_registry(tmp_path, dense_task())
    common = ["--task", "fg_dense", "--registry", str(reg), "--encoder", "scratch", "--encoder-arg", "width=4",
              "--train-limit", "64", "--test-limit", "16", "--data-root", str(tiny_mnist), "--out",
              str(tmp_path / "o"), "--quiet", "--no-figures", "--no-speed"]
    assert main(common) == 0
    assert main([*common, "--decoder", "linknet"]) == 0
    assert main([*common, "--decoder", "unet,linknet,pspnet"]) == 0  # one new combination, in a grid child
    capsys.readouterr()
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert sorted(r.get("decoder", "-") for r in rows) == ["-", "linknet", "pspnet"]  # unet rows name none
    assert len({row_key(r) for r in rows}) == 3
    psp = next(r for r in rows if r.get("decoder") == "pspnet")
    assert "-pspnet-" in Path(psp["run_dir"]).name
    model = zoo.load_model(Path(psp["run_dir"]) / "best.pt", registry_files=[reg])
    assert type(model.heads["mask"].decoder).__name__ == "PSPNet"


@pytest.mark.parametrize("args,expect", [
    (["--decoder", "dpt"], "decoder 'dpt' cannot serve encoder 'scratch' (head 'mask')"),
    (["--decoder", "fpn", "--decoder-arg", "bogus=1"], "unknown setting(s) 'bogus'; valid: pyramid_channels"),
    (["--decoder", "fpnn"], "Did you mean 'fpn'"),
    (["--encoder", "resnet18", "--decoder", "deeplabv3plus"], "output stride of 8 or 16"),
    (["--task", "foreground", "--decoder", "fpn"], "task 'foreground' has no dense head"),
    (["--task", "joint", "--decoder", "fpn"], "task 'joint' has no dense head"),
])
def test_bad_decoder_flags_are_one_line_before_any_data(tmp_path, capsys, args, expect):
    from zoo.bench import main

    reg = write_registry(tmp_path, dense_task())
    rc = main(["--task", "fg_dense", "--registry", str(reg), "--encoder", "scratch", "--data-root",
               str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 2 and "Traceback" not in err and expect in err and "no-data" not in err, err




def _load_smp(model: torch.nn.Module, ref: torch.nn.Module, prefix: dict[str, str]) -> int:
    """smp's weights into zoo's model, renamed by prefix; returns the number of smp's values zoo has no
    place for (smp's ViT encoder keeps the classifier timm's features_only model drops)."""
    own, state, unused = model.state_dict(), {}, 0
    for k, v in ref.state_dict().items():
        p = next(p for p in prefix if k.startswith(p))
        key = prefix[p] + k[len(p):]
        if key in own:
            state[key] = v
        else:
            assert k.startswith(("encoder.model.norm.", "encoder.model.head.")), k
            unused += v.numel()
    model.load_state_dict(state, strict=True)
    return unused


def test_dpt_on_a_vit_is_smps_dpt_with_the_class_token_ignored():
    """zoo's DPT on ViT-Tiny's blocks 2, 5, 8, 11 is smp's DPT built with decoder_readout="ignore" (zoo's
    levels are maps, not tokens): its parameters, but for the final norm and classifier smp's ViT encoder
    keeps unused, and with smp's weights its outputs, exactly."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    ref = smp.create_model("dpt", encoder_name="tu-vit_tiny_patch16_224", encoder_weights=None, in_channels=3,
                           classes=5, decoder_readout="ignore", dynamic_img_size=True).eval()
    model = zoo.build_model("timm:vit_tiny_patch16_224", {"seg": {"head": "segmentation", "settings": {
        "num_classes": 5, "decoder": "dpt"}}}, in_channels=3, encoder_settings={"out_indices": [2, 5, 8, 11]}).eval()
    unused = _load_smp(model, ref, {"encoder.model.": "encoder.model.model.", "decoder.": "heads.seg.decoder.decoder.",
                                    "segmentation_head.head.0.": "heads.seg.decoder.head_body.0.",
                                    "segmentation_head.head.1.": "heads.seg.decoder.head_body.1.",
                                    "segmentation_head.head.4.": "heads.seg.segmentation_head."})
    assert unused == 192 * 2 + 192 * 1000 + 1000  # the norm and the 1000-class classifier
    assert sum(p.numel() for p in model.parameters()) + unused == sum(p.numel() for p in ref.parameters())
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert (model(x)["seg"] - ref(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("decoder", ["fpn", "upernet", "segformer"])
def test_a_decoder_on_swin_is_smps_model(decoder):
    """The transformer pyramid: Swin-Tiny's channels-last maps go through zoo's contract as smp's
    TimmUniversalEncoder takes them (equal parameters, equal outputs). smp itself cannot build DeepLabV3
    or PAN on Swin (they pass output_stride, which Swin does not take); zoo reads Swin's stride 32."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    ref = smp.create_model(decoder, encoder_name="tu-swin_tiny_patch4_window7_224", encoder_weights=None,
                           in_channels=3, classes=5, img_size=128).eval()
    model = zoo.build_model("timm:swin_tiny_patch4_window7_224", {"seg": {"head": "segmentation", "settings": {
        "num_classes": 5, "decoder": decoder}}}, in_channels=3, encoder_settings={"img_size": 128}).eval()
    assert _load_smp(model, ref, {"encoder.": "encoder.", "decoder.": "heads.seg.decoder.decoder.",
                                  "segmentation_head.0.": "heads.seg.segmentation_head."}) == 0
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert (model(x)["seg"] - ref(x)).abs().max().item() <= 1e-5


def test_every_builtin_decoder_names_the_smp_model_it_equals():
    """SMP_TWIN says how each of zoo's smp decoders is smp's model (the equality tests and decoder_step.py read
    it); a user's own decoder, not smp's, is not compared."""
    assert BUILTIN == set(SMP_TWIN)


@pytest.mark.parametrize("decoder", [d for d in DECODERS if d in SMP_TWIN and d != "dpt"])
def test_each_decoder_is_smps_model(decoder):
    """zoo's one-head model on resnet18 has smp's parameter count and, with smp's weights, its outputs."""
    import segmentation_models_pytorch as smp

    enc_settings, dec_settings = SMP_TWIN[decoder]
    torch.manual_seed(0)
    ref = smp.create_model(decoder, encoder_name="tu-resnet18", encoder_weights=None, in_channels=3, classes=5).eval()
    model = zoo.build_model("resnet18", {"seg": {"head": "segmentation", "settings": {
        "num_classes": 5, "decoder": decoder, "decoder_settings": dec_settings}}}, in_channels=3,
        encoder_settings=enc_settings).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    prefix = {"encoder.": "encoder.", "decoder.": "heads.seg.decoder.decoder.",
              "segmentation_head.0.": "heads.seg.segmentation_head."}
    state = {}
    for k, v in ref.state_dict().items():
        p = next(p for p in prefix if k.startswith(p))
        state[prefix[p] + k[len(p):]] = v
    model.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert (model(x)["seg"] - ref(x)).abs().max().item() <= 1e-5


ONNX_ENCODERS = {"scratch": {"width": 8, "input_skip": True}, "resnet18": {"output_stride": 16}}


@pytest.mark.parametrize("encoder", list(ONNX_ENCODERS))
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_exports_to_onnx(tmp_path, decoder, encoder):
    """Every decoder that serves scratch or resnet18 (at output stride 16, which every smp decoder but the
    undilated ones reads; those are exported on scratch) exports, and onnxruntime gives PyTorch's output."""
    import onnxruntime as ort

    from zoo.export import export

    settings = ONNX_ENCODERS[encoder]
    if _refusal(decoder, encoder, settings) is not None:
        settings = {k: v for k, v in settings.items() if k != "output_stride"}
    if _refusal(decoder, encoder, settings) is not None:
        pytest.skip(f"{decoder} cannot serve {encoder}: its refusal is tested above")
    torch.manual_seed(0)
    model = zoo.build_model(encoder, {"out": _head("segmentation", decoder)}, encoder_settings=settings).eval()
    model.record = hand_record(("resize", (56, 56)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path))
    for batch in (1, 3):
        x = torch.rand(batch, 1, 56, 56)
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = model(x)["out"].numpy()
        assert got.shape == want.shape == (batch, 3, 56, 56)
        assert np.abs(got - want).max() <= 1e-4


def test_a_pooled_decoder_on_a_training_batch_of_one_is_one_line():
    """smp's DeepLab, PAN and UPerNet decoders pool to 1x1 in a global branch: a training batch of one is a
    clear error naming the head and the fix (torch's own message names neither); eval mode predicts."""
    model = zoo.build_model("scratch", {"seg": {"head": "segmentation", "settings": {"num_classes": 3,
                                                                                   "decoder": "deeplabv3"}}},
                            encoder_settings={"width": 8})
    with pytest.raises(ValueError, match=r"training batch of 1 image\(s\): head 'seg' pools its features to 1x1"):
        model.train()(torch.rand(1, 1, 64, 64))
    assert model.eval()(torch.rand(1, 1, 64, 64))["seg"].shape == (1, 3, 64, 64)


def test_a_task_that_decodes_with_another_decoder_never_shares_a_row_with_unet(tiny_mnist, tmp_path, capsys):
    """A task entry whose dense head decodes with linknet: its plain run and --decoder linknet are the same
    model (one row key, the second run skipped), while --decoder unet is another model with a row of its own."""
    import json

    from zoo.bench import main

    reg = write_registry(tmp_path, dense_task(settings={"decoder": "linknet"}))
    common = ["--task", "fg_dense", "--registry", str(reg), "--encoder", "scratch", "--encoder-arg", "width=4",
              "--train-limit", "64", "--test-limit", "16", "--data-root", str(tiny_mnist), "--out",
              str(tmp_path / "o"), "--quiet", "--no-figures", "--no-speed"]
    assert main(common) == 0
    assert main([*common, "--decoder", "unet,linknet"]) == 0  # linknet is the plain run: only unet trains
    capsys.readouterr()
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert sorted(r.get("decoder", "-") for r in rows) == ["-", "unet"]
    assert len(rows) == 2 and rows[0]["parameters"] != rows[1]["parameters"]


def test_the_scratch_encoder_dilates_to_its_output_stride_and_deeplab_reads_it():
    """``output_stride`` on the scratch encoder: the deeper blocks keep the resolution and dilate (the
    same weights), so DeepLabV3+ (which needs stride 8 or 16) serves it, at the input's size."""
    plain = zoo.build_model("scratch", {"m": _head("binary_mask", "unet")}, encoder_settings={"width": 8, "depth": 5})
    model = zoo.build_model("scratch", {"m": _head("binary_mask", "deeplabv3plus")},
                            encoder_settings={"width": 8, "depth": 5, "output_stride": 8})
    assert plain.encoder.reductions == [1, 2, 4, 8, 16] and model.encoder.reductions == [1, 2, 4, 8, 8]
    assert {k: v.shape for k, v in plain.encoder.state_dict().items()} == \
        {k: v.shape for k, v in model.encoder.state_dict().items()}
    feats = model.encoder(torch.rand(2, 1, 32, 32))
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 32), (16, 16), (8, 8), (4, 4), (4, 4)]
    assert model(torch.rand(2, 1, 32, 32))["m"].shape == (2, 1, 32, 32)


@pytest.mark.parametrize("stride", [1, 3, 32, True])
def test_the_scratch_encoder_refuses_an_output_stride_it_cannot_give_in_one_line(stride):
    with pytest.raises((RegistryError, ValueError)) as exc:
        zoo.build_model("scratch", {"m": _head("binary_mask", "unet")},
                        encoder_settings={"width": 8, "depth": 5, "output_stride": stride})
    _one_line_error(exc, "output_stride", "one of 2, 4, 8, 16", repr(stride))


def test_a_joint_task_under_decoder_is_compared_with_baselines_under_the_same_decoder(tmp_path):
    """--decoder on a task with baselines (delta_m): its single-task baselines that have a dense head are planned
    with the same decoder, so delta_m compares like with like; a baseline without a dense head runs as it is;
    and delta_m reads exactly those rows, never the same tasks under another decoder."""
    from zoo.bench import parse_args
    from zoo.engine.config import budget_mode
    from zoo.runs.gain import add_gain, baseline_decoder
    from zoo.runs.plan import plan_jobs

    args = parse_args(["--task", "scenes", "--encoder", "scratch", "--decoder", "fpn", "--quick", "--out",
                       str(tmp_path)])
    jobs = plan_jobs(args, REG, budget_mode(args), tmp_path)
    assert sorted((j.cfg.task, j.cfg.decoder) for j in jobs) == [
        ("scenes", "fpn"), ("scenes_depth", "fpn"), ("scenes_normals", "fpn"), ("scenes_seg", "fpn")]
    assert baseline_decoder("fpn", "scenes_depth", REG) == "fpn"
    assert baseline_decoder("fpn", "circlization", REG) is None  # no dense head: the task as it is
    assert baseline_decoder(None, "scenes_depth", REG) is None
    # the task's own decoder (linknet for scenes) is its plain run: plain baselines
    own = parse_args(["--task", "scenes", "--encoder", "scratch", "--decoder", "linknet", "--quick", "--out",
                      str(tmp_path)])
    assert {j.cfg.decoder for j in plan_jobs(own, REG, budget_mode(own), tmp_path)} == {None}

    spec = task_spec("scenes", REG)
    mode = jobs[0].mode
    joint = {"task": "scenes", "encoder": "scratch", "weighting": "fixed", "budget_mode": mode, "seed": 0,
             "decoder": "fpn", **{m: 50.0 for m in spec.baselines}}
    rows = []
    for decoder, value in (("fpn", 40.0), (None, 60.0)):  # the same baselines under fpn and under their own
        for metric, ref in spec.baselines.items():
            task, base_metric = ref.split(".")
            row = next((r for r in rows if r["task"] == task and r.get("decoder") == decoder), None)
            if row is None:
                row = {"task": task, "encoder": "scratch", "weighting": "fixed", "budget_mode": mode, "seed": 0,
                       "parameters": 1, "train_seconds": 1.0, **({"decoder": decoder} if decoder else {})}
                rows.append(row)
            row[base_metric] = value
    assert add_gain(joint, spec.baselines, rows, spec.lower_is_better, REG) == []
    assert all(joint[f"single_{m}"] == 40.0 for m in spec.baselines)
    with pytest.raises(ValueError, match="needs the registry"):
        add_gain(dict(joint), spec.baselines, rows, spec.lower_is_better)


def test_decoder_all_is_every_decoder_that_reads_the_encoder_as_given():
    """``--decoder all`` per encoder: each registered decoder whose own declaration accepts the encoder's levels
    under the command's --encoder-arg (hand-checked as REFUSED above: dilated, resnet18 serves DeepLabV3+ and no
    longer the decoders that upsample by fixed factors of 2)."""
    from zoo.bench import parse_args
    from zoo.runs.plan import plan_decoders

    plain = plan_decoders(parse_args(["--decoder", "all"]), REG, {}, ["scratch", "resnet18"])
    assert plain == {e: [d for d in DECODERS if d not in REFUSED[e]] for e in ("scratch", "resnet18")}
    dilated = plan_decoders(parse_args(["--decoder", "all", "--encoder-arg", "output_stride=16"]), REG, {},
                            ["resnet18"])
    assert set(dilated["resnet18"]) == {"unet", "pspnet", "deeplabv3", "deeplabv3plus", "pan", "upernet", "segformer"}


USER_DECODER = '''
import torch
from zoo.heads.decoder import Decoder


class Deepest(Decoder):
    """A 1x1 convolution on the deepest level; the dense head upsamples it."""

    def __init__(self, channels, reductions, width=8):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels[-1], width, 1)
        self.out_channels, self.out_reduction, self.head_kernel = width, reductions[-1], 1

    @classmethod
    def refuse(cls, channels, reductions, **settings):
        return "it reads one level of at most stride 8" if reductions[-1] > 8 else None

    def forward(self, features):
        return torch.relu(self.conv(features[-1]))
'''


def test_a_users_own_decoder_is_one_class_and_one_yaml_entry(tiny_mnist, tmp_path, monkeypatch, capsys):
    """A decoder in the user's own module, registered in their YAML: --list shows it, --decoder trains with it
    and its --decoder-arg value, the row names it, the model reloads with it, and its refusal is one line."""
    import json
    from pathlib import Path

    from zoo.bench import main

    (tmp_path / "my_decoders.py").write_text(USER_DECODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = dense_task()
    entries["decoders"] = {"deepest": {"target": "my_decoders:Deepest", "paper": "ours, 2026"}}
    reg = write_registry(tmp_path, entries)
    assert main(["--list", "--registry", str(reg)]) == 0
    assert "ours, 2026" in capsys.readouterr().out
    common = ["--task", "fg_dense", "--registry", str(reg), "--encoder", "scratch", "--encoder-arg", "width=4",
              "--train-limit", "64", "--test-limit", "16", "--data-root", str(tiny_mnist), "--out",
              str(tmp_path / "o"), "--quiet", "--no-figures", "--no-speed"]
    assert main([*common, "--decoder", "deepest", "--decoder-arg", "width=6"]) == 0
    capsys.readouterr()
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert row["decoder"] == "deepest" and 0 <= row["iou"] <= 100
    model = zoo.load_model(Path(row["run_dir"]) / "best.pt", registry_files=[reg])
    assert type(model.heads["mask"].decoder).__name__ == "Deepest"
    assert model.heads["mask"].decoder.conv.out_channels == 6
    assert main([*common[:4], "--encoder", "resnet18", "--decoder", "deepest", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "decoder 'deepest' cannot serve encoder 'resnet18'" in err and "at most stride 8" in err, err


def test_an_output_stride_the_encoder_cannot_give_is_one_line():
    """Swin has no dilated form in timm: asking for one names the encoder, the setting and encoders that can
    dilate, in one line (not the TypeError from deep in its constructor)."""
    settings = {**ENCODERS["timm:swin_tiny_patch4_window7_224"], "output_stride": 16}
    with pytest.raises(RegistryError) as exc:
        zoo.build_model("timm:swin_tiny_patch4_window7_224", {"m": _head("binary_mask", "deeplabv3plus")},
                        encoder_settings=settings)
    _one_line_error(exc, "'swin_tiny_patch4_window7_224' has no dilated form", "output_stride=16",
                    "timm's CNNs do (e.g. resnet18, mobilenetv3_large_100")


def test_pan_refuses_more_than_five_levels_below_stride_1():
    """No registered encoder reaches stride 64, so PAN's upper bound is checked on hand-made levels: smp's PAN
    reads strides 2-32, and a sixth level below stride 1 is refused with the count."""
    pan = REG.entry("decoders", "pan").obj
    assert pan.refuse([8] * 6, [1, 2, 4, 8, 16, 32]) is None
    reason = pan.refuse([8] * 7, [1, 2, 4, 8, 16, 32, 64])
    assert reason is not None and "at most five levels below stride 1" in reason and "has 6" in reason, reason

"""The registry: YAML entries with lazy targets, user files, duplicates, unknown names, malformed files."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import zoo
from conftest import assert_clear, foreground_task, run_cli, write_registry
from zoo.core.registry import Registry, RegistryError

ROOT = __import__('pathlib').Path(__file__).resolve().parent.parent


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_names():
    reg = zoo.load_registry()
    assert {"scratch", "resnet18", "resnet34", "resnet50", "mobilenetv3_small_100", "mobilenetv3_large_100"} <= set(reg.names("encoders"))
    assert set(reg.names("heads")) >= {"binary_mask", "segmentation", "classification", "circle"}
    assert set(reg.names("tasks")) >= {"foreground", "circlization", "semantic"}
    assert zoo.list_encoders() == reg.names("encoders")


def test_unknown_name_lists_valid_and_closest():
    reg = zoo.load_registry()
    with pytest.raises(RegistryError) as e:
        reg.entry("encoders", "resnet19")
    msg = str(e.value)
    assert "resnet19" in msg and "Did you mean 'resnet18'" in msg and "scratch" in msg
    with pytest.raises(RegistryError, match="Did you mean 'circlization'"):
        reg.entry("tasks", "circlisation")


def test_unknown_timm_model_is_clear():
    reg = zoo.load_registry()
    with pytest.raises(RegistryError, match="unknown timm model 'resnet181'.*resnet18"):
        reg.entry("encoders", "timm:resnet181")


def test_registry_imports_no_component():
    """YAML is the one registration path and targets import on first use: loading the registry and
    --list import no component, so neither pays for timm (and the registry has no import cycle)."""
    code = ("import sys, zoo; r = zoo.load_registry(); from zoo.bench import main; main(['--list']); "
            "print(sorted(m for m in sys.modules if m == 'timm' or m.startswith(('zoo.encoders', 'zoo.tasks.', "
            "'heads.', 'zoo.core.weighting', 'zoo.core.losses')) and not m.endswith('.base') "
            "and m != 'zoo.encoders'))")  # (the package itself imports only the encoder contract, its base)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    reg = zoo.load_registry()
    assert reg.entry("encoders", "timm:efficientnet_b0").settings["model_name"] == "efficientnet_b0"
    assert "timm" not in reg.names("encoders") and reg.prefixes("encoders") == ["timm"]


def test_scratch_foreground_run_does_not_import_timm(tiny_mnist, tmp_path):
    """A scratch model without a U-Net decoder (smp's, which imports timm) never imports timm."""
    code = ("import sys; from zoo.bench import main; rc = main(['--task', 'foreground', '--encoder', 'scratch', "
            f"'--data-root', {str(tiny_mnist)!r}, '--out', {str(tmp_path)!r}, '--quick', '--quiet', '--no-figures']); "
            "print(rc, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 False"


def test_yaml_duplicate_name_across_files_raises(tmp_path):
    f = write(tmp_path / "dup.yaml", """
        heads:
          binary_mask:
            target: zoo.heads.segmentation:SegmentationHead
    """)
    with pytest.raises(RegistryError) as e:
        Registry.load(extra=[f])
    assert str(f) in str(e.value) and "heads.binary_mask" in str(e.value) and "duplicate" in str(e.value)


def test_yaml_override_allowed(tmp_path):
    f = write(tmp_path / "ovr.yaml", """
        encoders:
          scratch:
            target: zoo.encoders.scratch:ScratchEncoder
            settings: {width: 8, depth: 3}
            override: true
    """)
    reg = Registry.load(extra=[f])
    assert reg.build("encoders", "scratch").out_channels == [8, 16, 32]


def test_yaml_duplicate_key_in_one_file_raises(tmp_path):
    f = write(tmp_path / "dupkey.yaml", """
        heads:
          mine: {target: "zoo.heads.segmentation:SegmentationHead"}
          mine: {target: "zoo.heads.binary_mask:BinaryMaskHead"}
    """)
    with pytest.raises(RegistryError, match="duplicate key 'mine'"):
        Registry.load(extra=[f])


@pytest.mark.parametrize("text,expect", [
    ("heads: [unclosed", "YAML error"),
    ("heads:\n  mine: {settings: {}}\n", "missing field 'target'"),
    ("heads:\n  mine: {target: 'no_such_module_xyz:Head'}\n", "does not import"),
    ("heads:\n  mine: {target: 'zoo.heads.binary_mask:NoSuchClass'}\n", "does not import"),
    ("heads:\n  mine: {target: 42}\n", "must be a string 'module:attr'"),
    ("heads:\n  mine: {target: 'zoo.heads.binary_mask:BinaryMaskHead', settings: [1, 2]}\n", "'settings' must be a mapping"),
    ("heads:\n  mine: just-a-string\n", "entry must be a mapping"),
    ("gadgets:\n  mine: {target: 'x:y'}\n", "unknown section 'gadgets'"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_malformed_registry_names_file_and_entry(tmp_path, text, expect):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(RegistryError) as e:
        # a target that does not import is reported when the entry is first used (imports are lazy)
        Registry.load(extra=[f]).entry("heads", "mine").obj
    assert expect in str(e.value)
    assert str(f) in str(e.value)
    if text.startswith("heads:\n  mine"):
        assert "heads.mine" in str(e.value)


def test_missing_registry_file(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        Registry.load(extra=[tmp_path / "nope.yaml"])


def test_bad_settings_are_reported():
    reg = zoo.load_registry()
    with pytest.raises(RegistryError, match=r"encoder 'scratch': unknown setting\(s\) 'nonsense'; valid: in_channels, width"):
        reg.build("encoders", "scratch", nonsense=1)
    with pytest.raises(ValueError, match="in_channels must be 1"):
        reg.build("encoders", "scratch", in_channels=2)


TOY_HEAD = '''
import torch
from torch import nn

from zoo import Head


class ToyCountHead(Head):
    """Predicts the number of foreground pixels (a regression head written by a user)."""

    output_kind = "values"
    default_target, default_loss = "mask", "toy_count_loss"

    def __init__(self, channels, reductions, scale: float = 100.0):
        super().__init__(channels, reductions)
        self.scale = scale
        self.fc = nn.Linear(channels[-1], 1)

    def forward(self, features):
        return self.fc(features[-1].mean((2, 3))) * self.scale

    def predict(self, output, size=None):
        return output[:, 0].round().long()


class ToyCountLoss(nn.Module):
    def forward(self, output, target):
        count = target.flatten(1).sum(1).float()
        return nn.functional.smooth_l1_loss(output[:, 0], count)
'''

TOY_YAML = '''
heads:
  toy_count:
    target: toy_heads_mod:ToyCountHead
    settings: {scale: 50.0}
losses:
  toy_count_loss:
    target: toy_heads_mod:ToyCountLoss
tasks:
  toy_task:
    target: zoo.tasks.mnist:ForegroundTask
    heads:
      count: {head: toy_count, weight: 1.0}
      mask: {head: binary_mask, loss: bce, weight: 0.5, target: mask}
    metrics:
      iou: {metric: iou, head: mask, target: mask}
    monitor: iou
    budget: {epochs: 2, batch_size: 16, lr: 0.003, schedule: none}
'''


def test_user_head_from_yaml_trains(tmp_path, tiny_mnist, monkeypatch):
    """A head in a user module + one YAML entry: listed, built, trained; nothing in zoo/ edited."""
    (tmp_path / "toy_heads_mod.py").write_text(TOY_HEAD)
    reg_file = tmp_path / "my_registry.yaml"
    reg_file.write_text(TOY_YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_heads_mod", None)

    assert "toy_count" in zoo.list_heads([reg_file])
    assert "toy_task" in zoo.list_tasks([reg_file])
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit

    cfg = RunConfig(task="toy_task", encoder="scratch", epochs=2, batch_size=16, lr=3e-3, schedule="none",
                    data_root=str(tiny_mnist), registry=(str(reg_file),), encoder_settings={"width": 8})
    seen = []
    result = fit(cfg, on_epoch_end=lambda e, row: seen.append(row["losses"]["count"]), show_progress=False)
    assert len(seen) == 2 and seen[1] < seen[0]  # the user's head learns
    assert 0.0 <= result.test["iou"] <= 100.0


@pytest.mark.parametrize("head", zoo.list_heads())
def test_every_head_resolves_from_an_entry_that_names_only_the_head(head, tmp_path):
    """A task entry ``{head: NAME}`` with no loss or target gets the head class's declared defaults
    (read before any head exists); the circle head's depend on its mode."""
    from zoo.engine.build import task_spec
    from zoo.heads.base import Head
    from zoo.tasks.base import TaskData

    reg_file = write_registry(tmp_path, {"tasks": {"only_head": foreground_task(
        heads={"out": {"head": head}, "circle_regress": {"head": "circle", "settings": {"mode": "regress"}}},
        metrics={"iou": {"metric": "iou", "head": "out", "target": "mask"}})}})
    reg = zoo.load_registry([reg_file])
    spec = task_spec("only_head", reg)
    resolved = spec.task.resolve(spec, TaskData({}, {}, {}, {}), reg)
    by = {h.name: h for h in resolved.heads}
    cls = reg.entry("heads", head).obj
    assert issubclass(cls, Head)
    want = cls.defaults(reg.entry("heads", head).settings)
    assert None not in want and (by["out"].loss, by["out"].target) == want
    assert (by["circle_regress"].loss, by["circle_regress"].target) == ("circle_l1", "circle")
    reg.entry("losses", by["out"].loss)  # a registered loss


# ----------------------------------------------------------------------------- hostile registry files
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("content,expect", [
    ("a: " + "[" * 50000 + "]" * 50000 + "\n", "nested deeper than 64 levels"),
    (BOMB, "expands to more than 100,000 values"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "is not UTF-8 text (byte 0 is 0x89)"),
], ids=["deep", "alias-bomb", "binary"])
def test_hostile_registry_files(tiny_mnist, tmp_path, capsys, content, expect):
    f = tmp_path / "r.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o"),
                       "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", expect)

"""zoo models in the Hugging Face layout: ``save_pretrained``, ``read_named_folder``, ``push_to_hub``.
This module reads and writes folders only; ``zoo.use.load`` builds their models (``zoo.from_pretrained``).

A model folder holds ``config.json`` (the format, task, encoder, heads, normalisation and the model's
record: run config, metrics, data, machine, recipe), ``model.safetensors`` and ``README.md``, a model card
written from the record. ``from_pretrained`` takes such a folder or ``hf-hub:ORG/NAME``; hub names go
through huggingface_hub's cache, so nothing in the cache is downloaded again, and with
``HF_HUB_OFFLINE=1`` only the cache is read.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import one_line
from zoo.core.files import atomic_write_bytes, atomic_write_text, give_folder_mode
from zoo.core.model import MultiTaskModel
from zoo.version import __version__

FORMAT = 1  # config.json's zoo_format: bumped when a folder written now could not be read by older code
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FILES = (CONFIG, WEIGHTS, CARD)
HUB_PREFIX = "hf-hub:"
MAX_CONFIG_BYTES = 10 * 2**20  # a config.json is a few KB; a bigger one is not ours
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHIPPED = ("file", "file_size_mb", "sha256")
# What save_pretrained writes into config.json around the model's record
FOLDER_KEYS = ("library_name", "zoo_format", "zoo_version", "normalization", "card_sha256")  # a shipped file's own: not the folder's



def save_pretrained(model: MultiTaskModel, directory: str | Path) -> Path:
    """Write ``model`` to ``directory`` in the Hugging Face layout (see the module docstring).

    The folder is written beside its target and renamed into place, so a failed save (or a full disk)
    leaves what was there. An existing folder is replaced only when it is a zoo model folder.
    """
    rec = getattr(model, "record", None)
    if not isinstance(model, MultiTaskModel) or rec is None:
        raise ValueError("save_pretrained needs a zoo model with its record (model.record): one from zoo.load_model, "
                         "zoo.create_model or zoo.from_pretrained, e.g. zoo.load_model('RUN/best.pt')")
    target = Path(directory)
    check_replaceable(target)
    record = portable({k: v for k, v in rec.to_dict().items() if k not in _SHIPPED})
    config = {**record, "library_name": "zoo", "zoo_format": FORMAT, "zoo_version": __version__,
              "task": rec.task, "encoder": rec.encoder, "in_channels": rec.in_channels,
              "heads": {n: {"class": type(h).__name__, "target": rec.head_specs.get(n, {}).get("target"),
                            "output": h.output_kind} for n, h in model.heads.items()},
              "normalization": getattr(model.encoder, "normalization", None)}
    from safetensors.torch import save

    card = model_card(config)
    config["card_sha256"] = hashlib.sha256(card.encode("utf-8")).hexdigest()  # a later save knows the card is zoo's
    weights = save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    try:
        atomic_write_bytes(tmp / WEIGHTS, weights)
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=2, sort_keys=True))
        atomic_write_text(tmp / CARD, card)
        give_folder_mode(tmp)
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old.exists() and not target.exists():
                os.replace(old, target)  # what was there stays
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def check_replaceable(target: Path) -> None:
    """``target`` may be written: it is missing, empty, or a zoo model folder holding only what zoo wrote there
    (its ``README.md`` the card zoo writes for its ``config.json``). Anything a user put there is never lost."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is a file; give a new folder or a zoo model folder to replace")
    names = sorted(p.name for p in target.iterdir())
    if not names:
        return
    why = ""
    foreign = [n for n in names if n not in FILES]
    if foreign:
        why = f"it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which zoo did not write"
    else:
        try:
            old = read_config(target)
        except ValueError:
            old = None
        if old is None:
            why = f"it holds {', '.join(names)} but no zoo {CONFIG}"
        elif CARD in names and hashlib.sha256((target / CARD).read_bytes()).hexdigest() != old.get("card_sha256"):
            why = f"its {CARD} is not the model card zoo wrote there (edited, or a file of yours)"
    if why:
        raise ValueError(f"{target} is not a zoo model folder to replace: {why}; give a new folder, or move "
                         "your files out first")


# Keys of a model's record that hold local paths: a Hub folder is published, so they become names
_LOCAL_PATHS = ("data_root", "source", "run_dir", "log", "resume", "init_from")


def portable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with no absolute local path in it (a folder is pushed to the Hub as it is): a path-valued
    setting becomes its last component (``/home/me/data/mnist`` -> ``mnist``), and the recipe command's
    absolute paths likewise."""
    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if isinstance(value, str) and key == "recipe":
            return " ".join(_name_of(t) for t in value.split(" "))
        if isinstance(value, str) and (key in _LOCAL_PATHS or os.path.isabs(value)):
            return _name_of(value)
        return value

    return scrub(record)


def _name_of(token: str) -> str:
    """An absolute path's last component (``--data-root=/a/b`` -> ``--data-root=b``); other text as it is."""
    head, eq, tail = token.rpartition("=") if token.startswith("-") and "=" in token else ("", "", token)
    return head + eq + (Path(tail).name or tail if os.path.isabs(tail) else tail)


def _table(values: dict[str, Any]) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v:.2f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in values.items()]
    return rows


def model_card(config: dict[str, Any]) -> str:
    """The README.md of a model folder: the Hub's metadata block, then what the model is, its metrics, data,
    machine and the command that trained it, all from the record (nothing the record lacks is made up)."""
    name = config.get("name") or f"{config['task']}/{config['encoder']}"
    cfg = config.get("config") or {}
    lines = ["---", "library_name: zoo", "tags:", "- zoo", "- multi-task", f"- {config['task']}",
             f"- {config['encoder']}", "---", "", f"# {name}", "",
             f"A zoo multi-task model: the `{config['encoder']}` encoder shared by the heads "
             + ", ".join(f"`{n}` ({h['class']})" for n, h in config["heads"].items())
             + f", trained on the `{config['task']}` task.", ""]
    if config.get("metrics"):
        lines += ["## Metrics", "", f"Test metrics (%), {config.get('metrics_data') or 'on the task test split'}:", "",
                  *_table(config["metrics"]), ""]
        if config.get("val_metrics"):
            lines += ["Validation metrics of the kept checkpoint:", "", *_table(config["val_metrics"]), ""]
    else:
        lines += ["## Metrics", "", "This model's record has no test metrics (it was saved from a checkpoint without "
                  "its results row).", ""]
    info = config.get("info") or {}
    lines += ["## Data", ""]
    if config.get("train_data"):
        lines.append(f"- {config['train_data']}")
    if cfg.get("data_root"):  # a name, not a local path (``portable``)
        lines.append(f"- data: `{Path(str(cfg['data_root'])).name}`")
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Training", ""]
    for key, label in (("machine", "machine"), ("torch", "torch"), ("epochs", "epochs"),
                       ("best_epoch", "kept epoch (best on validation)"), ("train_seconds", "training seconds"),
                       ("num_params", "parameters")):
        if config.get(key) is not None:
            lines.append(f"- {label}: {config[key]}")
    if config.get("normalization"):
        lines.append(f"- input normalisation (applied inside the model): {config['normalization']}")
    if config.get("recipe"):
        lines += ["", "Recipe:", "", "```bash", config["recipe"], "```"]
    lines += ["", "## Use", "", "```python", "import zoo", 'model = zoo.from_pretrained("THIS_FOLDER or hf-hub:ORG/NAME")',
              "```", "", "```bash", "python -m zoo.predict THIS_FOLDER image.png --out predictions/",
              "python -m zoo.export THIS_FOLDER --format onnx --out model.onnx", "```", ""]
    return "\n".join(lines) + "\n"


def is_model_folder(name: str | Path) -> bool:
    """A name ``from_pretrained`` takes: ``hf-hub:ORG/NAME`` or a folder (checked when read)."""
    return str(name).startswith(HUB_PREFIX) or Path(name).is_dir()


def _download(name: str) -> Path:
    """The folder of hub model ``hf-hub:ORG/NAME`` in the Hugging Face cache (fetched when online)."""
    repo = name[len(HUB_PREFIX):]
    if not _REPO_ID.match(repo):
        raise ValueError(f"{name!r}: a hub model is named hf-hub:ORG/NAME (e.g. hf-hub:acme/circlization-resnet18)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from zoo.encoders.timm_weights import quiet

    try:
        with quiet("huggingface_hub"):
            return Path(snapshot_download(repo, allow_patterns=list(FILES)))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        raise ValueError(f"{name}: the model is not in the Hugging Face cache {constants.HF_HUB_CACHE} and {why}; "
                         f"fill the cache on a machine with network (hf download {repo}, with the same HF_HOME), "
                         "or give its local folder") from None
    except Exception as exc:  # repo not found, gated, HTTP errors
        raise ValueError(f"{name}: cannot be fetched from the Hugging Face Hub: {one_line(exc)}") from None


def member(folder: Path, name: str, root: Path | None = None) -> Path:
    """``folder / name``, refused when it is a link that leaves ``root`` (the folder itself unless given: a
    hub snapshot's files link into its cache repo's blobs). A model folder is untrusted: it never makes zoo
    read a file elsewhere on the machine."""
    path = folder / name
    root = (root or folder).resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise ValueError(f"{path} is a link to {real}, outside the model folder {folder}; a model folder's files "
                         "must be inside it (copy the file in instead of linking it)")
    return path


def read_config(folder: str | Path, root: Path | None = None) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder: every failure is one line naming it."""
    folder = Path(folder)
    path = member(folder, CONFIG, root)
    if not path.is_file():
        hint = "; a run folder's model is RUN/best.pt" if (folder / "best.pt").is_file() else ""
        raise ValueError(f"{folder} has no {CONFIG}: not a zoo model folder (write one with zoo.save_pretrained or "
                         f"python -m zoo.export MODEL --format hub --out DIR){hint}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes; a zoo {CONFIG} is a few KB")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); is it a zoo model folder?") from None
    if not isinstance(config, dict) or config.get("library_name") != "zoo":
        raise ValueError(f"{path} is not a zoo model config (no library_name: zoo); it was written by another library")
    if config.get("zoo_format") != FORMAT:
        raise ValueError(f"{path} is zoo model format {config.get('zoo_format')!r} (written by zoo "
                         f"{config.get('zoo_version', '?')}); this zoo ({__version__}) reads format {FORMAT}: "
                         "upgrade zoo, or save the model again with this version")
    missing = [k for k in ("task", "encoder", "config") if not config.get(k)]
    if missing or not isinstance(config["config"], dict):
        raise ValueError(f"{path} lacks {', '.join(missing) or 'a config mapping'}; is the folder complete?")
    return config


def read_folder(folder: str | Path, root: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and ``config.json`` of a model folder, checked: every failure is one line naming it.
    ``root``: the folder its files may link into (default the folder itself)."""
    folder = Path(folder)
    config = read_config(folder, root)
    weights = member(folder, WEIGHTS, root)
    if not weights.is_file():
        raise ValueError(f"{folder} has no {WEIGHTS}; is the folder complete?")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise ValueError(f"{weights} is not readable safetensors (empty, truncated or corrupt): "
                         f"{one_line(exc)}") from None
    return state, config


def read_named_folder(name: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """The weights, the record in ``config.json`` (checked) and the path of model folder ``name``: a folder, or ``hf-hub:ORG/NAME``
    through the Hugging Face cache (a snapshot's files are links into its cache repo's blobs,
    ``models--ORG--NAME/blobs``: that repo is the root they may point into)."""
    text = str(name)
    folder = _download(text) if text.startswith(HUB_PREFIX) else Path(text)
    state, config = read_folder(folder, folder.parent.parent if text.startswith(HUB_PREFIX) else None)
    # the folder's own keys around the record (save_pretrained's) are not the model's record
    return state, {k: v for k, v in config.items() if k not in FOLDER_KEYS}, folder


def push_to_hub(model: MultiTaskModel | str | Path, repo_id: str, *, token: str | None = None,
                private: bool = False, commit_message: str = "Upload zoo model") -> str:
    """Upload a model (or a folder written by ``save_pretrained``) to the Hub repo ``repo_id``, created if
    missing, with huggingface_hub's own ``create_repo`` and ``upload_folder``. Returns the commit URL."""
    if not _REPO_ID.match(repo_id or ""):
        raise ValueError(f"repo_id must be ORG/NAME, got {repo_id!r}")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(model) if isinstance(model, (str, Path)) else save_pretrained(model, Path(tmp) / "model")
        read_folder(folder)  # only a complete, readable zoo folder is uploaded
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=list(FILES),
                                     commit_message=commit_message)
        except Exception as exc:  # offline, no token, no write access
            raise ValueError(f"push_to_hub {repo_id}: {one_line(exc)}") from None
    return str(getattr(info, "commit_url", info))

"""Where a timm encoder's pretrained weights come from: a local file, or timm's own weights through the
Hugging Face cache (downloaded when online, read from the cache when offline; never anything else).

``pretrained`` is ``true`` (timm's default weights for the model), a timm tag (``resnet18.a1_in1k``,
see ``timm.list_pretrained("resnet18.*")``) or a local file path.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import timm
from timm.models import get_pretrained_cfg

from zoo.core.errors import one_line
from zoo.core.registry import RegistryError
from zoo.encoders.base import asks_for_published

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


@dataclass(frozen=True)
class Source:
    """``kind`` is ``"file"`` (``where`` a path) or ``"timm"`` (``where`` a timm ``arch.tag`` name)."""

    kind: str
    where: str


def weights_source(model_name: str, pretrained: Any) -> Source | None:
    """What ``pretrained`` names for timm model ``model_name``; None for random weights."""
    if pretrained is None or pretrained is False or (isinstance(pretrained, str) and pretrained.strip().lower()
                                                     in ("", "false", "none")):
        return None
    arch, _, own_tag = model_name.partition(".")  # timm:resnet18.a1_in1k names its weights itself
    if asks_for_published(pretrained):
        if own_tag:
            return Source("timm", model_name)
        tags = timm.list_pretrained(f"{model_name}.*")
        if not tags:
            raise RegistryError(f"pretrained=true: timm has no pretrained weights for {model_name!r}; give a local "
                                "weights file (pretrained=PATH) or train from random weights")
        default = get_pretrained_cfg(model_name)  # timm's default tag for the bare name
        return Source("timm", f"{model_name}.{default.tag}" if default and default.tag else tags[0])
    if not isinstance(pretrained, (str, os.PathLike)):
        raise RegistryError(f"pretrained must be true, a timm tag or a local file path, got {pretrained!r}")
    text = str(pretrained)
    if os.sep in text or "/" in text or text.endswith(WEIGHT_SUFFIXES) or Path(text).expanduser().exists():
        return Source("file", text)
    given, _, tag = text.partition(".")
    tags = timm.list_pretrained(f"{arch}.*")
    if not tag or given != arch or text not in tags or (own_tag and text != model_name):
        what = ("is not a timm tag of this encoder" if tag else "is neither a local file nor a timm tag (ARCH.TAG)")
        valid = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "(timm has none)"
        raise RegistryError(f"pretrained={text!r} {what}; timm's weights for {model_name}: {valid}; or give true, "
                            "or a local file path")
    return Source("timm", text)


def hub_file(name: str) -> tuple[str, str] | None:
    """The Hugging Face repo and weights file timm reads for ``name`` (``arch.tag``), or None when timm
    fetches that tag from a URL instead."""
    cfg = get_pretrained_cfg(name)
    if not cfg or not cfg.hf_hub_id:
        return None
    return cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"


_FETCHED: dict[tuple[str, str], Path] = {}  # (timm tag, cache folder) -> its checked file, this process


def fetch(name: str) -> Path | None:
    """The weights of timm tag ``name`` in the Hugging Face cache, downloading them when online. Every
    failure is one line naming the model, the cache folder and how to fill it."""
    where = hub_file(name)
    if where is None:
        return None  # a URL-only tag: timm's own loader fetches it (its errors are wrapped at build)
    repo, filename = where
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cache = constants.HF_HUB_CACHE
    known = _FETCHED.get((name, cache))
    if known is not None and known.is_file():  # setup's prepare fetched it: the encoder's build asks no Hub
        return known
    try:
        with quiet("huggingface_hub"):
            path = Path(hf_hub_download(repo, filename))
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: caught first)
        offline = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        raise RegistryError(
            f"pretrained weights {name} (Hugging Face repo {repo}, file {filename}) are not in the Hugging Face cache "
            f"{cache} and {offline}; fill the cache on a machine with network (hf download {repo} {filename}, with "
            "the same HF_HOME), or give a local file with pretrained=PATH") from None
    except EntryNotFoundError:
        if filename != "model.safetensors":
            raise RegistryError(f"pretrained weights {name}: the Hugging Face repo {repo} has no {filename}") from None
        return None  # online, and the repo has only a .bin: timm falls back to it itself
    except Exception as exc:  # repo not found, HTTP errors, a cache folder that cannot be written
        raise RegistryError(f"pretrained weights {name} (Hugging Face repo {repo}) cannot be fetched into "
                            f"{cache}: {one_line(exc)}") from None
    check_file(name, path)
    _FETCHED[(name, cache)] = path
    return path


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Loggers that narrate what is expected here (huggingface_hub logs each retry of an unreachable Hub;
    timm warns that a features-only model has no classifier for the checkpoint's) are held to errors:
    a failure is reported once, by zoo."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_file(name: str, path: Path) -> None:
    """A cached weights file that is not readable (truncated download, disk fault) is named, with the fix."""
    if path.suffix != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            if keys:
                f.get_slice(keys[-1])  # the header's offsets against the file's size
    except Exception as exc:
        raise RegistryError(f"pretrained weights {name}: the cached file {path} is not readable safetensors "
                            f"(corrupt or truncated: {one_line(exc, 160)}); delete it and fetch it again") from None


_REPORT = re.compile(r"(Unexpected|Missing) keys \((.*)\) (?:found|discovered) while loading pretrained weights")
_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[(.*?)\]\) from checkpoint, "
                       r"the shape in current model is torch\.Size\(\[(.*?)\]\)")


@contextlib.contextmanager
def load_report() -> Iterator[dict[str, list[str]]]:
    """The keys timm could not match while loading pretrained weights: ``{"unexpected": [...], "missing":
    [...]}``. A features-only model is loaded non-strictly and timm only logs what did not match, so
    another model's weights cached under this tag (resnet34's for resnet18: the same shapes, more blocks)
    would load silently; its log records are the one place that says so."""
    found: dict[str, list[str]] = {"unexpected": [], "missing": []}

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _REPORT.match(record.getMessage())
            if match:
                found[match[1].lower()] += [k for k in match[2].split(", ") if k]

    logger = logging.getLogger("timm.models._builder")
    handler, level, propagate = Catch(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the missing keys are logged at INFO
    logger.propagate = False  # reported here, by zoo, not by timm as well
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def check_fit(name: str, path: Path | None, report: dict[str, list[str]], model: Any, full: set[str]) -> None:
    """Weights that do not fit the architecture are an error naming the file and the shapes: tensors that
    not even the full model (``full``: its state's names) has a place for, or model tensors the file lacks
    (the classifier and an input conv timm could not adapt aside: a features-only model drops them)."""
    cfg = get_pretrained_cfg(name)
    skip = _names(cfg.classifier) + _names(cfg.first_conv) if cfg else []
    missing = [k for k in report["missing"] if not any(k.startswith(f"{s}.") for s in skip)]
    extra = [k for k in report["unexpected"] if k not in full]  # a features class lacks the head: not extra
    if not extra and not missing:
        return
    where = f"pretrained weights {name}: the file {path or '(fetched by timm)'} does not fit {name.split('.')[0]}"
    fix = "is it another model's weights? delete it and fetch it again, or give the right file with pretrained=PATH"
    if extra:
        k = next((k for k in extra if k.endswith("weight")), extra[0])
        raise RegistryError(f"{where}: it holds {len(extra)} tensor(s) the model has no place for, "
                            f"e.g. {k}{_file_shape(path, k)}; {fix}")
    own = model.state_dict().get(missing[0])  # (a features-only model keeps most of the full model's names)
    shape = f" of shape {tuple(own.shape)}" if own is not None else ""
    raise RegistryError(f"{where}: it lacks {len(missing)} of the model's tensors, e.g. {missing[0]}{shape}; {fix}")


def mismatch_error(name: str, path: Path | None, exc: Exception) -> RegistryError | None:
    """torch's size-mismatch error as one line naming the file, the tensor, the expected and found shapes."""
    match = _MISMATCH.search(str(exc))
    if match is None:
        return None
    count = str(exc).count("size mismatch for ")
    return RegistryError(f"pretrained weights {name}: the file {path or '(fetched by timm)'} does not fit "
                         f"{name.split('.')[0]}: {match[1]} has shape ({match[2]}) in the file, but the model expects "
                         f"({match[3]}) ({count} tensor(s) differ); is it another model's weights? delete it and "
                         "fetch it again, or give the right file with pretrained=PATH")


def _names(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _file_shape(path: Path | None, key: str) -> str:
    """`` of shape (..)`` of tensor ``key`` in a safetensors ``path`` (its header only), else ``""``."""
    if path is None or path.suffix != ".safetensors":
        return ""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f" of shape {tuple(f.get_slice(key).get_shape())}"
    except Exception:  # the shape only adds detail to an error already being raised
        return ""

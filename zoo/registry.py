"""The one place that maps names to constructors.

Components (encoders, heads, tasks, losses, metrics, weightings) are registered two ways
that meet here:

* in code, with ``@register("heads", "name")`` (like timm's ``@register_model``), and
* in data, by an entry in ``registry.yaml`` that names an import path ``module:attr`` and
  default settings, so a class in any importable module becomes available through one
  YAML entry, without editing anything inside ``zoo/``.

A user registry file merges onto the built-in one (``Registry.load(extra=[path])``).
Duplicate names raise unless the later entry says ``override: true``; unknown names raise
an error that lists the valid names and the closest match.
"""
from __future__ import annotations

import copy
import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

KINDS = ("encoders", "heads", "tasks", "losses", "metrics", "weightings")

# Filled by the @register decorator at import time of the modules that define components.
_DECORATED: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


class RegistryError(ValueError):
    """A registry lookup or a registry file is wrong; the message says what and where."""


def builtin_registry_path() -> Path:
    """Path of the built-in ``registry.yaml`` at the repository root."""
    return Path(__file__).resolve().parent.parent / "registry.yaml"


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Class decorator: register ``obj`` as ``name`` of ``kind``. Duplicates raise."""
    _check_kind(kind, where="register()")

    def wrap(obj: Any) -> Any:
        known = _DECORATED[kind].get(name)
        if known is not None and known is not obj:
            raise RegistryError(
                f"duplicate {kind[:-1]} name {name!r}: already registered by "
                f"{_qualname(known)}, now again by {_qualname(obj)}"
            )
        _DECORATED[kind][name] = obj
        return obj

    return wrap


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _check_kind(kind: str, where: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"{where}: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def unknown_name_error(what: str, name: str, valid: Iterable[str]) -> RegistryError:
    """An error for an unknown ``name`` that lists the valid names and the closest match."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return RegistryError(f"unknown {what} {name!r}.{hint} Valid {what}s: {', '.join(valid)}")


@dataclass
class Entry:
    """One registered component: the object, where it came from and its default settings."""

    kind: str
    name: str
    obj: Any
    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # the whole YAML entry (tasks use it)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that raises on duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    if not isinstance(target, str) or ":" not in target:
        raise ImportError(f"target must be a string 'module:attr', got {target!r}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    """All registered components, from decorators and one or more YAML files."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.files: list[Path] = []

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, extra: Iterable[str | Path] | None = None, builtin: bool = True) -> "Registry":
        """The built-in registry, with each file in ``extra`` merged onto it in order."""
        reg = cls()
        if builtin:
            reg.merge_file(builtin_registry_path())
        for path in extra or []:
            reg.merge_file(Path(path))
        reg._add_decorated()
        return reg

    def merge_file(self, path: Path) -> None:
        """Merge one YAML registry file; errors name the file and the entry."""
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"registry file {path} does not exist")
        try:
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry file {path}: YAML error: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RegistryError(
                f"registry file {path}: top level must be a mapping with keys among {', '.join(KINDS)}, "
                f"got {type(data).__name__}"
            )
        for kind, entries in data.items():
            if kind not in KINDS:
                raise RegistryError(
                    f"registry file {path}: unknown section {kind!r}; valid sections: {', '.join(KINDS)}"
                )
            if entries is None:
                continue
            if not isinstance(entries, dict):
                raise RegistryError(f"registry file {path}: section {kind!r} must be a mapping of name -> entry")
            for name, spec in entries.items():
                self._merge_entry(path, kind, str(name), spec)
        self.files.append(path)

    def _merge_entry(self, path: Path, kind: str, name: str, spec: Any) -> None:
        where = f"registry file {path}, {kind}.{name}"
        if not isinstance(spec, dict):
            raise RegistryError(f"{where}: entry must be a mapping with a 'target: module:attr' field, got {spec!r}")
        if "target" not in spec:
            raise RegistryError(f"{where}: missing field 'target' (an import path 'module:attr')")
        target = spec["target"]
        if not isinstance(target, str) or ":" not in target:
            raise RegistryError(f"{where}: field 'target' must be a string 'module:attr', got {target!r}")
        settings = spec.get("settings", {}) or {}
        if not isinstance(settings, dict):
            raise RegistryError(f"{where}: field 'settings' must be a mapping, got {type(settings).__name__}")
        override = spec.get("override", False)
        if not isinstance(override, bool):
            raise RegistryError(f"{where}: field 'override' must be true or false, got {override!r}")
        try:
            obj = import_target(target)
        except Exception as exc:  # any import failure is the entry's fault; say which entry
            raise RegistryError(f"{where}: target {target!r} does not import: {type(exc).__name__}: {exc}") from None
        if not callable(obj):
            raise RegistryError(f"{where}: target {target!r} is not a class or function")
        known = self._entries[kind].get(name)
        if known is not None and not override:
            raise RegistryError(
                f"{where}: duplicate {kind[:-1]} name {name!r}, already defined by {known.source}; "
                f"choose another name or add 'override: true'"
            )
        decorated = _DECORATED[kind].get(name)
        if decorated is not None and decorated is not obj and not override:
            raise RegistryError(
                f"{where}: duplicate {kind[:-1]} name {name!r}: {target} is not the class registered "
                f"under that name in code ({_qualname(decorated)}); choose another name or add 'override: true'"
            )
        self._entries[kind][name] = Entry(kind, name, obj, f"{path.name}: {target}", dict(settings), dict(spec))

    def _add_decorated(self) -> None:
        for kind, named in _DECORATED.items():
            for name, obj in named.items():
                if name not in self._entries[kind]:
                    self._entries[kind][name] = Entry(kind, name, obj, f"@register: {_qualname(obj)}")

    # ------------------------------------------------------------------ lookups
    def names(self, kind: str) -> list[str]:
        """Sorted names of one kind."""
        _check_kind(kind, where="names()")
        return sorted(self._entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name lists the valid ones and the closest match."""
        _check_kind(kind, where="entry()")
        if kind == "encoders" and name.startswith("timm:") and name not in self._entries[kind]:
            return self._timm_entry(name)
        if name not in self._entries[kind]:
            extra = ["timm:<any timm model>"] if kind == "encoders" else []
            raise unknown_name_error(kind[:-1], name, self.names(kind) + extra)
        return self._entries[kind][name]

    def _timm_entry(self, name: str) -> Entry:
        from zoo.encoders.timm_encoder import TimmEncoder, check_timm_name

        model_name = check_timm_name(name.partition(":")[2])
        return Entry("encoders", name, TimmEncoder, "timm (any backbone)", {"model_name": model_name})

    def build(self, kind: str, name: str, **overrides: Any) -> Any:
        """Construct ``name`` with its default settings updated by ``overrides``."""
        entry = self.entry(kind, name)
        settings = copy.deepcopy(entry.settings)
        settings.update(overrides)
        try:
            return entry.obj(**settings)
        except TypeError as exc:
            raise RegistryError(f"cannot build {kind[:-1]} {name!r} with settings {settings}: {exc}") from None

    def entries(self, kind: str) -> list[Entry]:
        """All entries of one kind, sorted by name."""
        return [self._entries[kind][n] for n in self.names(kind)]

"""The one place that maps names to constructors.

``registry.yaml`` is the source of every name: an entry names an import path
``module:attr`` and default settings, so a class in any importable module becomes available
through one YAML entry, without editing anything inside ``zoo/``. A user registry file
merges onto the built-in one (``Registry.load(extra=[path])``). Duplicate names raise unless
the later entry says ``override: true``; unknown names raise an error that lists the valid
names and the closest match.

Targets are imported lazily, on first use: ``--list`` and a scratch run never pay for
importing timm. The registry imports none of its components; an entry with ``prefix: KEY``
(the ``timm`` encoder) also answers ``NAME:<rest>`` by building its target with
``KEY=<rest>``, and the target's own ``check_name`` (if any) validates ``<rest>``.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from zoo.core.errors import one_line

KINDS = ("encoders", "heads", "decoders", "architectures", "tasks", "losses", "metrics", "weightings")
ENTRY_FIELDS = {"target", "settings", "override", "prefix", "paper", "description"}


class RegistryError(ValueError):
    """A registry lookup or a registry file is wrong; the message says what and where."""


def builtin_registry_path() -> Path:
    """The built-in ``registry.yaml``: inside the installed package (a wheel), else at the root of the
    repository this package lives in (a source checkout or an editable install)."""
    package = Path(__file__).resolve().parent.parent  # zoo/
    packaged = package / "registry.yaml"
    return packaged if packaged.is_file() else package.parent / "registry.yaml"


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
    """One registered component: where it comes from, its default settings and (on first use) its object."""

    kind: str
    name: str
    target: str
    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # the whole YAML entry (tasks use it)
    _obj: Any = field(default=None, repr=False)
    file: str = ""

    @property
    def obj(self) -> Any:
        """The imported target; an import failure names the file and the entry."""
        if self._obj is None:
            try:
                obj = import_target(self.target)
            except Exception as exc:  # any import failure is the entry's fault; say which entry
                raise RegistryError(f"registry file {self.file}, {self.kind}.{self.name}: target {self.target!r} "
                                    f"does not import: {type(exc).__name__}: {exc}") from None
            if not callable(obj):
                raise RegistryError(f"registry file {self.file}, {self.kind}.{self.name}: target {self.target!r} is "
                                    "not a class or function")
            self._obj = obj
        return self._obj


def check_settings(what: str, obj: Any, settings: dict[str, Any], fixed: Iterable[str] = ()) -> None:
    """Unknown setting keys are an error listing the valid ones (before anything is built)."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n not in fixed and n != "self"
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = sorted(set(settings) - set(valid) - set(fixed))
    if unknown:
        raise RegistryError(f"{what}: unknown setting(s) {', '.join(map(repr, unknown))}; valid: "
                            f"{', '.join(valid) or '(none)'}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that raises on duplicate mapping keys (PyYAML keeps the last silently) and refuses
    documents nested deeper than ``MAX_DEPTH`` or expanding (aliases counted at every use) to more than
    ``MAX_NODES`` nodes: a registry file is untrusted input, and a 50,000-deep file (RecursionError)
    or an alias bomb (gigabytes once copied) must be a clear error, not a crash."""

    MAX_DEPTH = 64
    MAX_NODES = 100_000

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > self.MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"nested deeper than {self.MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}, self.MAX_NODES) > self.MAX_NODES:
            raise yaml.YAMLError(f"expands to more than {self.MAX_NODES:,} values once its aliases (*name) are "
                                 "resolved; a registry file never needs that many")
        return node


def _expanded_size(node: Any, memo: dict[int, int | None], limit: int) -> int:
    """Nodes in ``node`` with every alias expanded (a shared node counts each time it is used). An alias
    inside the node it names (``&a [*a]``) would expand forever: an error naming its line, not a
    RecursionError here or in whatever later walks the self-containing value."""
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise yaml.YAMLError(f"a recursive alias: the node anchored on line {node.start_mark.line + 1} contains "
                                 "an alias (*name) to itself; a value cannot contain itself")
        return size
    memo[id(node)] = None  # being counted: meeting it again below is a cycle
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    size = 1
    for child in children:
        size += _expanded_size(child, memo, limit)
        if size > limit:  # stop early: the caller only needs to know the bound is passed
            break
    memo[id(node)] = size
    return size


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


def load_yaml(text: str) -> Any:
    """YAML text read as a registry file is (no duplicate keys, no alias bombs or recursive aliases):
    for every YAML value a user gives, such as ``--task-arg KEY=VALUE``."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


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
    """All registered components, from one or more YAML files."""

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
        return reg

    def merge_file(self, path: Path) -> None:
        """Merge one YAML registry file; errors name the file and the entry."""
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"registry file {path} does not exist")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RegistryError(f"registry file {path} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
                                "a registry file is YAML") from None
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry file {path}: YAML error: {one_line(exc, None)}") from None
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
        if kind != "tasks":  # task entries carry their own fields (heads, metrics, ...), checked by TaskSpec
            unknown = set(spec) - ENTRY_FIELDS
            if unknown:
                raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {sorted(ENTRY_FIELDS)}")
        settings = spec.get("settings", {}) or {}
        if not isinstance(settings, dict):
            raise RegistryError(f"{where}: field 'settings' must be a mapping, got {type(settings).__name__}")
        override = spec.get("override", False)
        if not isinstance(override, bool):
            raise RegistryError(f"{where}: field 'override' must be true or false, got {override!r}")
        if ":" in name:
            raise RegistryError(f"{where}: a name cannot contain ':' (reserved for prefix entries like timm:<name>)")
        known = self._entries[kind].get(name)
        if known is not None and not override:
            raise RegistryError(
                f"{where}: duplicate {kind[:-1]} name {name!r}, already defined by {known.source}; "
                f"choose another name or add 'override: true'"
            )
        self._entries[kind][name] = Entry(kind, name, target, f"{path.name}: {target}", dict(settings), dict(spec),
                                          file=str(path))

    # ------------------------------------------------------------------ lookups
    def names(self, kind: str) -> list[str]:
        """Sorted names of one kind (prefix entries such as ``timm`` are listed by ``prefixes``)."""
        _check_kind(kind, where="names()")
        return sorted(n for n, e in self._entries[kind].items() if not e.spec.get("prefix"))

    def prefixes(self, kind: str) -> list[str]:
        """Names that answer ``NAME:<rest>`` (e.g. ``timm``)."""
        _check_kind(kind, where="prefixes()")
        return sorted(n for n, e in self._entries[kind].items() if e.spec.get("prefix"))

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name lists the valid ones and the closest match."""
        _check_kind(kind, where="entry()")
        if not isinstance(name, str):
            raise RegistryError(f"{kind[:-1]} name must be a string, got {name!r}")
        head, sep, rest = name.partition(":")
        if sep and head in self._entries[kind] and self._entries[kind][head].spec.get("prefix"):
            return self._prefixed(self._entries[kind][head], name, rest)
        if name not in self._entries[kind] or self._entries[kind][name].spec.get("prefix"):
            extra = [f"{p}:<name>" for p in self.prefixes(kind)]
            raise unknown_name_error(kind[:-1], name, self.names(kind) + extra)
        return self._entries[kind][name]

    @staticmethod
    def _prefixed(base: Entry, name: str, rest: str) -> Entry:
        """``timm:<rest>``: the base entry with its prefix setting set to ``rest``, validated by the
        target's ``check_name`` when it has one."""
        obj = base.obj
        if hasattr(obj, "check_name"):
            rest = obj.check_name(rest)
        settings = {**base.settings, base.spec["prefix"]: rest}
        return Entry(base.kind, name, base.target, f"{base.source} ({name})", settings, {}, obj, base.file)

    def build(self, kind: str, name: str, **overrides: Any) -> Any:
        """Construct ``name`` with its default settings updated by ``overrides``."""
        entry = self.entry(kind, name)
        settings = copy.deepcopy(entry.settings)
        settings.update(overrides)
        check_settings(f"{kind[:-1]} {name!r}", entry.obj, settings)
        try:
            return entry.obj(**settings)
        except TypeError as exc:
            raise RegistryError(f"cannot build {kind[:-1]} {name!r} with settings {settings}: {exc}") from None

    def entries(self, kind: str) -> list[Entry]:
        """All entries of one kind, sorted by name (prefix entries last)."""
        return [self._entries[kind][n] for n in self.names(kind) + self.prefixes(kind)]

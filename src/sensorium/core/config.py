"""The one config loader: dataclass defaults, then a YAML recipe, then dotted overrides (`train.lr=3e-4`).

Values are checked against the field types at load (`lr: 3e-4`, which YAML reads as text, becomes a float; lists
and mappings of dataclasses are built), ranges and choices declared on fields (`checked(...)`) are enforced, a
dataclass's `validate()` hook runs, and an unknown key is named with the closest valid one. A dataclass section
of a recipe is merged into the defaults key by key; a list (e.g. `stages`) is replaced whole, each element
starting from its class's defaults; a mapping (e.g. towers by modality) is merged key by key unless its field is
declared `checked(replace=True)`, then the recipe's mapping replaces the default one whole."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A recipe or override value that cannot be used: the message names the file or override, the key path, the
    value and what is expected."""


def checked(default: Any = _MISSING, *, default_factory: Any = _MISSING, min: float | None = None,
            max: float | None = None, gt: float | None = None, lt: float | None = None,
            choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None, replace: bool = False) -> Any:
    """A dataclass field with load-time rules: `min`/`max` inclusive and `gt`/`lt` exclusive bounds (applied to a
    number, or to each number of a list or mapping), `choices` (a collection, or a function returning one, e.g.
    a registry's names), and `replace=True` for a mapping that a recipe replaces whole instead of merging."""
    meta: dict[str, Any] = {k: v for k, v in (("min", min), ("max", max), ("gt", gt), ("lt", lt),
                                               ("choices", choices)) if v is not None}
    if replace:
        meta["replace"] = True
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _Where:
    """Where a value came from: a source (file, override, class) and a dotted key path inside it."""

    def __init__(self, source: str, path: str = ""):
        self.source, self.path = source, path

    def child(self, key: Any) -> _Where:
        return _Where(self.source, f"{self.path}.{key}" if self.path else str(key))

    def __str__(self) -> str:
        return f"{self.source}: {self.path}" if self.path else self.source


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts and lists (what YAML holds)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML (every field, so the file alone reproduces the run)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the hint without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), allows_none
    return hint, False


def _is_dataclass(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _container(hint: Any) -> tuple[str | None, Any]:
    """('list', element hint) | ('dict', value hint) | (None, None) for other hints."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (list, tuple) or origin in (list, tuple, typing.get_origin(Sequence[int])):
        return "list", (args[0] if args else Any)
    if hint is dict or origin is dict:
        return "dict", (args[1] if len(args) == 2 else Any)
    return None, None


def _unknown(key: Any, valid: Iterable[str], where: _Where) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint} (valid keys: {', '.join(valid)})")


def _defaults(cls: type) -> dict[str, Any]:
    """The defaults of a dataclass as a dict ({} when it has required fields)."""
    try:
        return to_dict(cls())
    except TypeError:
        return {}


def _merge(hint: Any, base: Any, new: Any, where: _Where, replace: bool = False) -> Any:
    """`new` (a recipe's plain value) merged onto `base` (the current plain value) for a field of type `hint`."""
    hint, _ = _optional(hint)
    if _is_dataclass(hint) and isinstance(new, dict):
        out = dict(base) if isinstance(base, dict) else _defaults(hint)
        fields, hints = _fields(hint), _hints(hint)
        for key, value in new.items():
            if key not in fields:
                raise _unknown(key, fields, where)
            out[key] = _merge(hints[key], out.get(key), value, where.child(key),
                              fields[key].metadata.get("replace", False))
        return out
    kind, inner = _container(hint)
    if kind == "list" and isinstance(new, list):  # lists are replaced whole; elements start from their defaults
        return [_merge(inner, None, v, where.child(i)) for i, v in enumerate(new)]
    if kind == "dict" and isinstance(new, dict):
        out = {} if replace or not isinstance(base, dict) else dict(base)
        for key, value in new.items():
            out[key] = _merge(inner, out.get(key), value, where.child(key))
        return out
    return new


def _number(value: Any, kind: type, where: _Where) -> int | float:
    """An int or float from a number or a numeric string (`3e-4`, `1e3`, `1_000`)."""
    name = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where} = {value!r}: expected {name}")
    if isinstance(value, str):
        try:
            value = float(value.strip().replace("_", "")) if kind is float or not value.strip().lstrip("+-").isdigit() \
                else int(value.strip())
        except ValueError:
            raise ConfigError(f"{where} = {value!r}: expected {name} (e.g. {'100' if kind is int else '3e-4'})") from None
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where} = nan: expected {name}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where} = {value!r}: expected a whole number")
            value = int(value)
        return value
    return float(value)


def _check_rules(value: Any, meta: typing.Mapping[str, Any], where: _Where) -> None:
    """Apply a field's declared bounds and choices to its value (each element of a list or mapping)."""
    if value is None or not meta:
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_rules(v, meta, where.child(i))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_rules(v, meta, where.child(k))
        return
    choices = meta.get("choices")
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(map(str, allowed))}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for rule, ok, text in (("min", lambda b: value >= b, ">="), ("max", lambda b: value <= b, "<="),
                               ("gt", lambda b: value > b, ">"), ("lt", lambda b: value < b, "<")):
            if rule in meta and not ok(meta[rule]):
                raise ConfigError(f"{where} = {value!r}: must be {text} {meta[rule]}")


def convert(hint: Any, value: Any, where: Any = "value") -> Any:
    """`value` (plain YAML data) as type `hint`: numbers parsed, dataclasses built (with their rules and hooks),
    lists and mappings converted element by element; a value of the wrong kind is a ConfigError naming it."""
    where = where if isinstance(where, _Where) else _Where(str(where))
    hint, allows_none = _optional(hint)
    if value is None:
        if allows_none or hint is Any:
            return None
        raise ConfigError(f"{where} = null: a value is required")
    if hint is Any or hint is object or isinstance(hint, TypeVar):
        return value
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # e.g. int | str: the first that fits
        errors = []
        for option in typing.get_args(hint):
            try:
                return convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if typing.get_origin(hint) is typing.Literal:
        _check_rules(value, {"choices": typing.get_args(hint)}, where)
        return value
    if _is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a mapping of {hint.__name__} fields")
        return _build(hint, value, where)
    kind, inner = _container(hint)
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected a list (e.g. [a, b])")
        items = [convert(inner, v, where.child(i)) for i, v in enumerate(value)]
        return tuple(items) if hint is tuple or typing.get_origin(hint) is tuple else items
    if kind == "dict":
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a mapping (key: value)")
        return {k: convert(inner, v, where.child(k)) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    if hint in (int, float):
        return _number(value, hint, where)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected text (quote it in YAML: '{value}')")
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], where: _Where) -> T:
    fields, hints = _fields(cls), _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(key, fields, where)
        kwargs[key] = convert(hints[key], value, where.child(key))
        _check_rules(kwargs[key], fields[key].metadata, where.child(key))
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a required field missing, or the class's own check
        raise ConfigError(f"{where}: {exc}") from None
    for name, f in fields.items():  # defaults the data did not mention obey the rules too
        if name not in kwargs:
            _check_rules(getattr(config, name), f.metadata, where.child(name))
    hook = getattr(config, "validate", None)
    if callable(hook):
        try:
            hook()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return config


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Dataclass `cls` from nested plain data (missing keys keep their defaults), converted and checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    return _build(cls, data, _Where(str(where)))


def _walk(cls: type, data: dict[str, Any], keys: list[str], item: str) -> tuple[Any, Any, Any, dict, _Where]:
    """Follow `keys[:-1]` from the root: (container, last key, field hint, field metadata, where) of the target."""
    where = _Where(f"override {item!r}")
    node: Any = data
    hint: Any = cls
    meta: dict = {}
    for depth, key in enumerate(keys):
        hint, _ = _optional(hint)
        last = depth == len(keys) - 1
        kind, inner = _container(hint)
        if _is_dataclass(hint):
            fields = _fields(hint)
            if key not in fields:
                raise _unknown(key, fields, where)
            target_hint, meta = _hints(hint)[key], dict(fields[key].metadata)
        elif kind == "list" or (hint is Any and isinstance(node, list)):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(f"{where.source}: {where.path or 'the list'} has {len(node)} entries; {key!r} is "
                                  f"not an index of it (0..{len(node) - 1})")
            key, target_hint, meta = int(key), inner, {}
        elif kind == "dict" or (hint is Any and isinstance(node, dict)):
            target_hint, meta = (inner if kind == "dict" else Any), {}  # below an Any mapping: Any, not None
        else:
            raise ConfigError(f"{where}: {where.path} = {node!r} is a value, not a section with keys")
        where = where.child(key)
        if last:
            return node, key, target_hint, meta, where
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None:
            child_hint, _ = _optional(target_hint)
            child = _defaults(child_hint) if _is_dataclass(child_hint) else {}
            node[key] = child
        node, hint = child, target_hint
    raise ConfigError(f"override {item!r}: empty key")


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) onto plain config data, in place. With the dataclass
    `cls`, keys are checked against its fields (the closest one suggested) and each value is converted and checked
    at once, so an error names the override that caused it."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"override {item!r} must look like key.path=value (e.g. train.lr=3e-4)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)})") from None
        node, key, hint, meta, where = _walk(cls if cls is not None else Any, data, path.split("."), item)
        current = node[key] if isinstance(node, list) else node.get(key) if isinstance(node, dict) else None
        merged = _merge(hint, current, value, where, meta.get("replace", False))
        if cls is not None:
            _check_rules(convert(hint, merged, where), meta, where)
        node[key] = merged
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML recipe as a mapping; a missing, unreadable, malformed or non-mapping file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML recipe is UTF-8 text)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)}); fix the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys (it holds a {type(loaded).__name__})")
    return loaded


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, updated by a YAML recipe (if given), then by dotted overrides; converted and checked."""
    data = to_dict(cls())
    source = str(path) if path else f"{cls.__name__} defaults"
    if path:
        data = _merge(cls, data, read_yaml(path), _Where(str(path)))
    apply_overrides(data, list(overrides), cls)
    return from_dict(cls, data, source)

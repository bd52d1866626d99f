"""Configs are dataclasses loaded from YAML with dotted overrides (`train.lr=3e-4`)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def reject_unknown(cls: type, data: dict[str, Any], where: str = "config") -> None:
    """Raise ValueError naming the keys of `data` that are not fields of dataclass `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(names)}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys with the path that holds them."""
    hints = typing.get_type_hints(cls)
    reject_unknown(cls, data, where)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[key] = from_dict(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _number(hint, value, f"{where}.{key}")
    return cls(**kwargs)


def _number(hint: Any, value: Any, where: str) -> Any:
    """A float field given as text (YAML reads `5e-4` as a string, `5.0e-4` as a number) or as an int becomes a
    float; text that is no number is an error naming the field."""
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}={value!r}: expected a number") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) onto a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, text = item.split("=", 1)
        node: Any = data
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            child = node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else (
                node.get(key) if isinstance(node, dict) else None)
            if not isinstance(child, (dict, list)):
                raise ValueError(f"override {item!r}: {key!r} is not a config section")
            node = child
        last = keys[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = _parse_value(text)
            continue
        if not isinstance(node, dict) or last not in node:
            raise ValueError(f"override {item!r}: unknown key {last!r}; expected some of {sorted(node)}")
        node[last] = _parse_value(text)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, updated by a YAML file (if given), then by dotted overrides."""
    data = to_dict(cls())
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must hold a mapping")
        _merge(data, loaded, str(path), cls)
    apply_overrides(data, overrides)
    return from_dict(cls, data, str(path or cls.__name__))


def _merge(base: dict[str, Any], new: dict[str, Any], where: str, cls: type | None = None) -> None:
    """Merge a loaded mapping into defaults, key by key. With the dataclass `cls` known, a field that is a free
    mapping (e.g. `dict[str, dict]` of tokenizers by modality) is replaced by the file's mapping as a whole, so a
    recipe can name keys the defaults do not have; dataclass sections are merged recursively."""
    hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    for key, value in new.items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r}; expected some of {sorted(base)}")
        hint = hints.get(key)
        if isinstance(base[key], dict) and isinstance(value, dict):
            if hint is not None and not dataclasses.is_dataclass(hint):
                base[key] = value
            else:
                _merge(base[key], value, f"{where}.{key}", hint)
        else:
            base[key] = value


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

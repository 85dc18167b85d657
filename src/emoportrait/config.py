"""Run settings: a typed dataclass with defaults, overridden by one YAML file, then by `--key=value`.

The resolved config is saved beside every checkpoint and output (`save_config`), so every result
names exactly the settings that produced it. Nested dataclasses are addressed with dotted keys
(`--optim.lr=1e-4`). An unknown key is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emoportrait.atomic import atomic_write_text
from emoportrait.errors import EMOError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type `tp` (ints to floats, lists to tuples, ...)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except EMOError as e:
                errors.append(str(e))
        raise EMOError(errors[0] if errors else f"config key {key}: cannot use {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise EMOError(f"config key {key} expects a mapping, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise EMOError(f"config key {key} expects a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise EMOError(f"config key {key} expects {len(args)} values, got {len(value)}")
        item_types = [args[0] if (origin is list or args[-1] is Ellipsis) else args[i] for i in range(len(value))] if args else [Any] * len(value)
        items = [_coerce(v, t, key) for v, t in zip(value, item_types)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise EMOError(f"config key {key} expects a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise EMOError(f"config key {key} expects float, got {value!r}") from None
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise EMOError(f"config key {key} expects {tp.__name__}, got {value!r}")
        return value
    return value


def _from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "", base: T | None = None) -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise EMOError(
            f"unknown config key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(types_))}"
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        current = getattr(base, name) if base is not None else None
        if _is_dataclass_type(tp) and isinstance(data[name], Mapping):
            kwargs[name] = _from_dict(tp, data[name], prefix=f"{prefix}{name}.", base=current)
        else:
            kwargs[name] = _coerce(data[name], tp, f"{prefix}{name}")
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EMOError(f"config key {key} conflicts with another override")
        node[parts[-1]] = value
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse `key=value` / `--key=value` strings; values are read as YAML (`3`, `1e-4`, `[1, 2]`)."""
    dotted: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise EMOError(f"override {item!r} must look like --key=value")
        key, raw = text.split("=", 1)
        try:
            dotted[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise EMOError(f"override {item!r}: cannot parse value ({e.__class__.__name__})") from None
    return _nest(dotted)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise EMOError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EMOError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EMOError(f"config file {path} must hold a mapping of keys to values")
    return data


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Build `cls` from its defaults, then the YAML file, then `--key=value` overrides."""
    cfg = cls()
    if yaml_path is not None:
        cfg = _from_dict(cls, read_yaml(yaml_path), base=cfg)
    over = parse_overrides(overrides)
    if over:
        cfg = _from_dict(cls, over, base=cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) of a config dataclass, for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

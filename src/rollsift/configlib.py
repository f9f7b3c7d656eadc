"""Dataclass configs from TOML and ``--set key=value`` overrides, with errors that say what to do.

Every config is a dataclass whose fields carry their documentation in ``field(metadata={"doc":
...})`` (rendered by ``rollsift train --explain``). Strategy configs have a ``type``
discriminator resolved through a plain registry dict of ``name -> "module:Class"`` strings, so
nothing heavy is imported until a strategy is actually used.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message names the key, the value and what is allowed."""


def doc(text: str, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A dataclass field with its one documentation string."""
    kw: dict[str, Any] = {"metadata": {"doc": text}}
    if default is not MISSING:
        kw["default"] = default
    if default_factory is not MISSING:
        kw["default_factory"] = default_factory
    return field(**kw)


def load_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one TOML value against a field type; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} = {value!r} is not allowed; choose one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # --set a=x,y
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return dict(value)
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    known = {_key(f): f for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        f = known[name]
        kwargs[f.name] = _coerce(value, hints[f.name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{prefix or cls.__name__}]: {e}") from e


def _key(f: Any) -> str:
    """A field's name in TOML: ``metadata["key"]`` where the field's own name cannot be it (the section
    ``async``, a Python keyword, is the field ``async_``)."""
    return f.metadata.get("key", f.name)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain TOML-able data (None values dropped)."""
    if is_dataclass(obj):
        return {_key(f): to_dict(getattr(obj, f.name)) for f in fields(obj) if getattr(obj, f.name) is not None}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items() if v is not None}
    return obj


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses as one, else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested dict ``data`` in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set has an empty key in {assignment!r}")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {p!r} is a value, not a table")
        node = nxt
    node[parts[-1]] = parse_value(raw.strip())


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def loads_toml(text: str) -> dict:
    """Parse TOML text (``tomllib``, or ``tomli`` on Python 3.10)."""
    return tomllib.loads(text)


def merge_into(base: dict, new: Mapping[str, Any]) -> dict:
    """Merge ``new`` into ``base`` in place, tables recursively (a later file or flag wins); returns ``base``."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge_into(base[k], v)
        else:
            base[k] = v
    return base


def dumps_toml(data: Mapping[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def explain(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) rows for every field of a config tree."""
    rows = []
    for f in fields(cls):
        key = f"{prefix}.{_key(f)}" if prefix else _key(f)
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "(required)"
        )
        if is_dataclass(default):
            rows += explain(type(default), key)
            continue
        rows.append((key, repr(default), f.metadata.get("doc", "")))
    return rows


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value!r}")


__all__ = [
    "ConfigError",
    "apply_override",
    "check_positive",
    "check_range",
    "doc",
    "dumps_toml",
    "explain",
    "from_dict",
    "load_class",
    "load_toml",
    "parse_value",
    "to_dict",
    "dataclasses",
]

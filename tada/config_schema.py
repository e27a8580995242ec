"""Strict construction of nested frozen dataclasses from plain data (a parsed YAML file), and back.

The schema (`tada.config`) declares each field's type and, in its metadata, its rules (`rules`: ``gt``, ``ge``,
``lt``, ``le``, ``choices``, ``subset``, ``interval``). `build` rejects unknown keys, wrong types, non-finite
numbers and values outside the rules, naming the dotted key path (``train.iterations must be > 0, got -5``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def rules(**rules: Any) -> dict[str, Any]:
    return {"rules": rules}


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            with contextlib.suppress(ConfigError):  # try the next type; the message below names them all
                return _coerce(option, value, path)
        raise ConfigError(f"{path} must be {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{path} must be a non-empty list, got {value!r}")
        return tuple(_coerce(typing.get_args(tp)[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .inf and .nan: no setting means either, and they fail far downstream
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")


def _check_rules(path: str, value: Any, rules: dict[str, Any]) -> None:
    if value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    for key, bound in rules.items():
        if key == "subset" and not set(items) <= set(bound):
            raise ConfigError(f"{path} must be chosen from {', '.join(bound)}, got {list(items)}")
        if key == "choices" and value not in bound:
            raise ConfigError(f"{path} must be one of {', '.join(map(str, bound))}, got {value!r}")
        if key == "interval":
            low, high = bound
            if not (low <= items[0] <= items[-1] <= high):
                raise ConfigError(f"{path} must be [low, high] with {low} <= low <= high <= {high}, got {list(items)}")
        for op, ok, word in (("gt", float.__gt__, ">"), ("ge", float.__ge__, ">="),
                             ("lt", float.__lt__, "<"), ("le", float.__le__, "<=")):
            if key == op and not all(ok(float(v), float(bound)) for v in items):
                raise ConfigError(f"{path} must be {word} {bound}, got {value!r}")


def build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'the configuration'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys{' of ' + path if path else ''}: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = f"{path}.{name}" if path else name
        value = _coerce(hints[name], data[name], key)
        _check_rules(key, value, f.metadata.get("rules", {}))
        kwargs[name] = value
    return cls(**kwargs)



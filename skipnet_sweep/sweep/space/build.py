"""Typed construction: a frozen dataclass from a YAML mapping, every key and type checked.

Each problem is one ``SpaceError`` naming the dotted field (``hrl.lr``, ``backbones[2]``) and
what it expects. A class that reads its own YAML shapes (``schema.Values``) has a
``from_space(data, where)`` classmethod.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.yamlio import show

# Metadata of a dataclass field that the program fills, never the file (``Space.source``).
NOT_A_KEY = {"yaml_key": False}


def build(cls, data: Any, where: str, *, also_allowed=()):
    """Build dataclass ``cls`` from ``data``, checking keys and types.

    Args:
        cls: the dataclass.
        data: what the YAML gave for it.
        where: its dotted field name in messages ("" at the top level).
        also_allowed: keys allowed beside ``cls``'s fields, read elsewhere (plugin sections).

    Raises:
        SpaceError: an unknown or missing key, or a value of the wrong type.
    """
    if hasattr(cls, "from_space"):
        return cls.from_space(data, where)
    if not isinstance(data, dict):
        raise SpaceError(f"{where or 'top level'}: expected a mapping, got {kind(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.metadata.get("yaml_key", True)}
    known |= set(also_allowed)
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise SpaceError(
            f"{join(where, key_name(unknown[0]))}: unknown field; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SpaceError(f"{join(where, f.name)}: required field is missing")
            continue
        kwargs[f.name] = convert(hints[f.name], data[f.name], join(where, f.name))
    try:
        return cls(**kwargs)
    except ValueError as err:  # a config class that validates itself (LatencyConfig, ...)
        raise SpaceError(f"{where or 'top level'}: {err}") from None


def convert(tp, value: Any, where: str):
    """``value`` as the annotated type ``tp`` (a YAML scalar alone is a one-item tuple)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        return convert(args[0], value, where)
    if value is None:
        raise SpaceError(f"{where}: must not be empty")
    if is_dataclass(tp):
        return build(tp, value, where)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(convert(item, v, f"{where}[{i}]") for i, v in enumerate(items))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpaceError(f"{where}: expected a mapping, got {kind(value)}")
        return dict(value)
    return _scalar(tp, value, where)


def _scalar(tp, value: Any, where: str):
    if tp is bool:
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: expected true or false, got {show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"{where}: expected an integer, got {show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpaceError(f"{where}: expected a number, got {show(value)}")
        if not math.isfinite(value):
            raise SpaceError(
                f"{where}: expected a finite number, got {value}; .nan and .inf are not allowed"
            )
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpaceError(f"{where}: expected a string, got {show(value)}")
        return value
    raise AssertionError(f"unsupported schema type {tp}")


def join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def key_name(key: Any) -> str:
    """A mapping key as a field name in a message: as written when it is a plain word,
    else quoted and cut (a key can be a number or a whole paragraph)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w+.-]{1,60}", key) else show(key)


def kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(type(value), show(value))

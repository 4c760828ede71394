"""Config values coerced to their declared types: YAML and command-line text in, typed values out."""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal


def type_name(tp: Any) -> str:
    """How a type reads in a message: "an integer", "one of 'auto' or true or false", ..."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping of names to text" if typing.get_args(tp) == (str, str) else "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise ValueError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        alternatives = typing.get_args(tp)
        if value is None and type(None) in alternatives:
            return None
        for alternative in alternatives:
            if alternative is not type(None):
                try:
                    return coerce(value, alternative)
                except ValueError:
                    continue
        raise ValueError
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin is list:
        if isinstance(value, str):  # `--languages zh,en` on the command line
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list):
            raise ValueError
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError
        return {str(k): coerce(v, str) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)  # a string too: YAML 1.1 reads `2e-4` as a string
        if not math.isfinite(number):  # `.nan`, "inf": no setting means that, and NaN slips past every `<= 0` check
            raise ValueError
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    raise TypeError(f"unsupported config type {tp}")



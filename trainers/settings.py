"""Frozen, validated settings dataclasses: help text on their fields, checks, and rebuilding from dicts.

A settings class is a frozen dataclass whose fields carry ``described(help)`` metadata and whose
``__post_init__`` checks them with :func:`require`. :mod:`trainers.cli` turns such a class into
command-line flags (nested classes get their field's ``prefix``), and :func:`from_dict` rebuilds
one from JSON, YAML or TOML, where lists stand for tuples and ints for floats.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from trainers.errors import ConfigError


def described(text: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: ``help`` text, and optionally ``flag`` (its flag's name), ``prefix`` (a nested
    class's) or ``cli=False`` (no flag: a setting only files and code give)."""
    return {"help": text, **extra}


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def setting_name(cls: type, path: str) -> str:
    """``path`` with its command-line flag, as in ``trials (--trials)``, so a message reads right from both."""
    *parents, name = path.split(".")
    flag, owner = "", cls
    for parent in parents:
        field = next(f for f in dataclasses.fields(owner) if f.name == parent)
        flag += field.metadata.get("prefix", "")
        owner = get_type_hints(owner)[parent]
    field = next(f for f in dataclasses.fields(owner) if f.name == name)
    return f"{path} (--{field.metadata.get('flag') or flag + name.replace('_', '-')})"


def from_dict(cls: type, values: Any) -> Any:
    """An instance of settings class ``cls`` from a plain dict; unknown keys are a ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__} settings must be a table of name = value, but got {values!r}")
    hints = get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} settings {sorted(unknown)}; check their spelling")
    return cls(
        **{name: _coerce(hints[name], value, f"{cls.__name__}.{name}") for name, value in values.items()}
    )


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint`` (JSON and TOML give lists for tuples, ints for floats), or a ConfigError."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of {hint.__name__} settings, but got {value!r}")
        return from_dict(hint, value)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(arg for arg in args if arg is not type(None)), value, where)
    if origin is tuple and dataclasses.is_dataclass(args[0]):
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(args[0], item, where) for item in value)
    elif origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
    elif origin is Literal:
        return value  # checked against the choices by __post_init__, with the list in the message
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is Path and isinstance(value, str):
        return Path(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where} must be {_describe(hint)}, but got {value!r}")


def _describe(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return "a list of names"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(hint, str(hint))


def difference(stored: Any, given: Any, path: str = "") -> str:
    """The first setting where two nested dicts differ, as ``path was X, now Y``."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in sorted(set(stored) | set(given)):
            if stored.get(key) != given.get(key):
                return difference(stored.get(key), given.get(key), f"{path}{key}.")
    return f"{path.rstrip('.') or 'value'} was {stored!r}, now {given!r}"


def setting_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted paths of a nested dict's leaves: ``{"lora": {"rank": 8}}`` gives ``{"lora.rank"}``."""
    paths = set()
    for key, value in tree.items():
        paths |= setting_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return paths

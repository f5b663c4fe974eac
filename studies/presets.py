"""Study presets: TOML files in ``studies/presets`` that set a study's data, teacher and search space.

A preset file has a ``description``, a ``[config]`` table of :class:`~trainers.config.TrainConfig`
settings (nested tables ``[config.data]``, ``[config.teacher]``, ...), a ``[study]`` table of study
settings (``trials``, ``pruner``, ... : the fields of ``search.config.StudyConfig``, checked there) and
a ``[space]`` table whose entries replace or add search ranges, keyed by setting path::

    [space.lr]
    low = 1e-4
    high = 1e-3
    log = true

    [space.batch_size]
    choices = [16, 32]

A relative ``[config.data] dataset`` is resolved against the preset's folder when it exists there.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.spaces import (
    LOSS_WEIGHTS,
    WEIGHT_NAMES,
    Distribution,
    SearchSpace,
    config_paths,
    default_space,
    distribution_from_toml,
)
from trainers.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class Preset:
    """A named study setup."""

    name: str
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Distribution] = field(default_factory=dict)


def available_presets() -> list[str]:
    """Names of the presets shipped with toxitune."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.toml"))


def load_preset(name: str) -> Preset:
    """The preset called ``name``, or read from ``name`` if it is a path to a TOML file.

    Raises:
        ConfigError: No such preset, or the file is not a valid preset.
    """
    path = Path(name)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {available_presets()} or give a .toml file"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"preset {path}: invalid TOML ({error})") from error
    unknown = set(raw) - {"description", "config", "study", "space"}
    if unknown:
        raise ConfigError(
            f"preset {path}: unknown tables {sorted(unknown)}; use description, config, study and space"
        )
    config = raw.get("config", {})
    data = config.get("data") if isinstance(config, dict) else None
    dataset = data.get("dataset") if isinstance(data, dict) else None
    # A path that starts with "." is the preset's own, relative to its file; a hub id never starts so.
    if isinstance(dataset, str) and (dataset.startswith(".") or (path.parent / dataset).exists()):
        data["dataset"] = str((path.parent / dataset).resolve())
    known = config_paths()
    space = {}
    for key, spec in raw.get("space", {}).items():
        if key not in known:
            raise ConfigError(
                f"preset {path}: [space] entry {key!r} is not a setting; settings are {sorted(known)}"
            )
        space[key] = distribution_from_toml(key, spec)
    study = raw.get("study", {})
    if not isinstance(study, dict):
        raise ConfigError(f"preset {path}: study must be a table of study settings, but got {study!r}")
    return Preset(
        name=path.stem, description=raw.get("description", ""), config=config, study=study, space=space
    )


def search_space(method: str, preset: Preset | None = None, fixed: Collection[str] = ()) -> SearchSpace:
    """``method``'s space, widened or narrowed by ``preset``, without the settings in ``fixed``.

    A fixed loss weight fixes the simplex the three are drawn on, so it leaves the space too.
    """
    space = {**default_space(method), **(preset.space if preset else {})}
    if set(fixed) & {f"loss.{name}" for name in WEIGHT_NAMES}:
        space.pop(LOSS_WEIGHTS, None)
    return {path: distribution for path, distribution in space.items() if path not in fixed}

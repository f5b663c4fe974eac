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
``extends = "NAME"`` (a preset or a .toml file) starts from that preset: this file's tables are
merged over its tables, entry by entry.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.spaces import (
    ALL_WEIGHT_NAMES,
    BRANCH,
    DEPTH,
    LAYER_MAP,
    LOSS_WEIGHTS,
    METHOD,
    Choice,
    Distribution,
    SearchSpace,
    check_depths,
    config_paths,
    default_space,
    distribution_from_toml,
)
from trainers.cli import merge
from trainers.config import DEPTH_FIXING_MAPS
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
    unknown = set(raw) - {"description", "extends", "config", "study", "space"}
    if unknown:
        raise ConfigError(
            f"preset {path}: unknown tables {sorted(unknown)}; use description, extends, config, study and space"
        )
    parent = load_preset(str(raw["extends"])) if "extends" in raw else Preset(name="")
    raw["config"] = merge(parent.config, raw.get("config", {}))
    raw["study"] = merge(parent.study, raw.get("study", {}))
    config = raw.get("config", {})
    data = config.get("data") if isinstance(config, dict) else None
    dataset = data.get("dataset") if isinstance(data, dict) else None
    # A path that starts with "." is the preset's own, relative to its file; a hub id never starts so.
    if isinstance(dataset, str) and (dataset.startswith(".") or (path.parent / dataset).exists()):
        data["dataset"] = str((path.parent / dataset).resolve())
    known = config_paths()
    space = dict(parent.space)
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


def search_space(
    method: str,
    preset: Preset | None = None,
    fixed: Collection[str] = (),
    teacher_depth: int | None = None,
) -> SearchSpace:
    """``method``'s space, widened or narrowed by ``preset``, without the settings in ``fixed``.

    A fixed loss weight fixes the simplex the weights are drawn on, so it leaves the space too; a fixed
    depth leaves only the layer maps that take one. In the ``any`` space a preset's entry replaces
    that path in every method's branch that reads it, or joins them.

    Args:
        method: What the study searches (see :func:`~studies.spaces.default_space`).
        preset: The preset whose ``[space]`` table applies.
        fixed: Setting paths given on the command line.
        teacher_depth: The teacher's encoder layers; ``distil`` and ``any`` need it.

    Raises:
        ConfigError: A depth range lies outside 1..L-1 for the teacher.
    """
    default = default_space(method, teacher_depth)
    entries = preset.space if preset else {}
    if METHOD in default:
        branches = {path.split(BRANCH)[0] for path in default if BRANCH in path}
        space = {
            **default,
            **{
                f"{b}{BRANCH}{path}": d
                for b in sorted(branches)
                for path, d in entries.items()
                if _branch_reads(b, path)
            },
        }
    else:
        space = {**default, **entries}

    def setting(path: str) -> str:
        return path.split(BRANCH)[-1]

    weights_fixed = bool(set(fixed) & {f"loss.{name}" for name in ALL_WEIGHT_NAMES})
    kept: dict[str, Distribution] = {}
    for path, distribution in space.items():
        if setting(path) in fixed or (weights_fixed and setting(path) == LOSS_WEIGHTS):
            continue
        if setting(path) == LAYER_MAP and DEPTH in fixed and isinstance(distribution, Choice):
            distribution = Choice(tuple(m for m in distribution.options if m not in DEPTH_FIXING_MAPS))
        kept[path] = distribution
    if teacher_depth is not None:
        check_depths(kept, teacher_depth)
    return kept


def _branch_reads(method: str, path: str) -> bool:
    """Whether ``method`` reads setting ``path``: LoRA's settings are LoRA's, loss and shape distillation's."""
    group = path.split(".")[0]
    if group == "lora":
        return method == "lora"
    return group not in ("loss", "student") or method == "distil"

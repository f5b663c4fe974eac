"""Search spaces: what each method tunes, and the only place that calls ``trial.suggest_*``.

A space maps a setting's path in :class:`~trainers.config.TrainConfig` (``"lr"``, ``"loss.temperature"``,
``"lora.rank"``) to a range or a set of choices. ``"loss.weights"`` is special: the loss weights
(by default the three on the logits; a preset may add ``w_hidden`` and ``w_attn``) are drawn on the
simplex, so their sum (a second learning rate in disguise) stays 1.
``"student.depth"`` is drawn only for a layer map that takes a depth (not ``odd`` or ``even``).

The ``any`` space searches the method too: ``"method"`` is drawn first, then only the entries of that
method's branch, keyed ``"METHOD/path"`` (``"lora/lr"``), so that each method keeps its own ranges and
the sampler models each branch apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers.cli import merge
from trainers.config import DEPTH_FIXING_MAPS, LAYER_MAPS, TrainConfig
from trainers.errors import ConfigError

if TYPE_CHECKING:
    import optuna

LOSS_WEIGHTS = "loss.weights"
METHOD = "method"
LAYER_MAP = "student.layer_map"
DEPTH = "student.depth"
# What the any space chooses between: distil covers odd and even as two of its layer maps.
ANY_METHODS = ("distil", "lora")
BRANCH = "/"
WEIGHT_NAMES = ("w_cls", "w_div", "w_cos")
# Every loss weight a simplex may draw: the three on the logits and the intermediate layers' two.
ALL_WEIGHT_NAMES = (*WEIGHT_NAMES, "w_hidden", "w_attn")


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``, on a log scale if ``log``."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class IntRange:
    """An int in ``[low, high]``, on a log scale if ``log``."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Choice:
    """One of ``options``; for a list setting, give comma-separated strings (``"query,value"``)."""

    options: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.options)


@dataclass(frozen=True)
class Simplex:
    """Loss weights that sum to 1, uniform on the part of the simplex where ``w_cls >= min_cls``.

    A floor on the label loss keeps a student from being trained on the teacher alone: with
    divergence warm-in, a near-zero ``w_cls`` leaves the first epochs with almost no signal.
    ``names`` are the weights drawn (``w_cls`` among them); the others keep their configured value.
    """

    min_cls: float = 0.0
    names: tuple[str, ...] = WEIGHT_NAMES

    def __post_init__(self) -> None:
        if not 0 <= self.min_cls < 1:
            raise ConfigError(f"min_cls must be in [0, 1), but got {self.min_cls}")
        unknown = set(self.names) - set(ALL_WEIGHT_NAMES)
        if "w_cls" not in self.names or unknown or len(set(self.names)) != len(self.names):
            raise ConfigError(
                f"simplex weights must be distinct names from {ALL_WEIGHT_NAMES}, w_cls among them, "
                f"but got {list(self.names)}"
            )

    def __repr__(self) -> str:
        # A study pins its space's repr: the default weights are left out, so studies stored before
        # the simplex could hold others still resume.
        names = "" if self.names == WEIGHT_NAMES else f", names={self.names!r}"
        return f"Simplex(min_cls={self.min_cls!r}{names})"

    def suggest(self, trial: optuna.Trial, name: str) -> dict[str, float]:
        # -log(u) for u ~ U(0, 1] is Exp(1); normalised exponentials are uniform on the simplex,
        # and an affine map onto the floored part keeps them uniform there.
        draws = [-math.log(trial.suggest_float(_draw_name(n), 1e-6, 1.0)) for n in self.names]
        total = sum(draws)
        weights = {n: (1 - self.min_cls) * d / total for n, d in zip(self.names, draws, strict=True)}
        weights["w_cls"] += self.min_cls
        for n, w in weights.items():
            trial.set_user_attr(n, w)
        return weights


def _draw_name(weight: str) -> str:
    return f"{weight}_draw"


def readable_params(params: Mapping[str, Any], user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters as a reader wants them: the loss weights in place of the simplex draws.

    The sampler works on the draws (``w_div_draw`` 0.0001 can mean ``w_div`` 0.77), so tables,
    importances and dashboards show the weights, which :class:`Simplex` stores as user attributes.
    Parameters of a trial without the draws come back unchanged.

    Example:
        >>> readable_params(trial.params, trial.user_attrs)
        {'lr': 7.7e-05, 'w_cls': 0.128, 'w_div': 0.77, 'w_cos': 0.102, 'loss.temperature': 1.36, ...}
    """
    names = [n for n in ALL_WEIGHT_NAMES if _draw_name(n) in params]
    draws = [_draw_name(n) for n in names]
    if not names or not all(n in user_attrs for n in names):
        return dict(params)
    readable: dict[str, Any] = {}
    for name, value in params.items():
        if name == draws[0]:  # the weights take the draws' place in the order
            readable |= {n: user_attrs[n] for n in names}
        elif name not in draws:
            readable[name] = value
    return readable


Distribution = FloatRange | IntRange | Choice | Simplex
SearchSpace = Mapping[str, Distribution]

_SHARED: dict[str, Distribution] = {
    "hidden_dropout": FloatRange(0.0, 0.3),
    "attention_dropout": FloatRange(0.0, 0.3),
    "weight_decay": FloatRange(0.0, 0.1),
    "warmup_ratio": FloatRange(0.0, 0.2),
    "batch_size": Choice((16, 32, 64)),
}
DISTILLATION_SPACE: dict[str, Distribution] = {
    "lr": FloatRange(2e-5, 5e-4, log=True),
    LOSS_WEIGHTS: Simplex(min_cls=0.1),
    "loss.temperature": FloatRange(1.0, 8.0, log=True),
    "loss.div_warmup_epochs": IntRange(0, 2),
    **_SHARED,
}
LORA_SPACE: dict[str, Distribution] = {
    "lr": FloatRange(1e-4, 3e-3, log=True),
    "lora.rank": IntRange(4, 64, log=True),
    "lora.alpha": FloatRange(4.0, 128.0, log=True),
    "lora.dropout": FloatRange(0.0, 0.3),
    "lora.target_modules": Choice(("query,key,value", "query,key,value,dense")),
    **_SHARED,
}
# The teacher's own fine-tuning, for a teacher study that --teacher-from then reads: a full fine-tune
# or LoRA adapters merged into the weights, at ranges wide enough for both.
TEACHER_SPACE: dict[str, Distribution] = {
    "lr": FloatRange(1e-5, 1e-3, log=True),
    "epochs": IntRange(2, 5),
    "warmup_ratio": FloatRange(0.0, 0.2),
    "hidden_dropout": FloatRange(0.0, 0.3),
    "weight_decay": FloatRange(0.0, 0.1),
    "teacher.kind": Choice(("full", "lora")),
}
SPACES: dict[str, dict[str, Distribution]] = {
    "odd": DISTILLATION_SPACE,
    "even": DISTILLATION_SPACE,
    "lora": LORA_SPACE,
    "teacher": TEACHER_SPACE,
}
# Searched with the student's shape, which needs the teacher's depth (see default_space).
SHAPE_METHODS = ("distil", "any")


def shape_space(teacher_depth: int) -> dict[str, Distribution]:
    """The student's layer map and depth for a ``teacher_depth``-layer teacher: 1..L-1 layers."""
    if teacher_depth < 2:
        raise ConfigError(f"a {teacher_depth}-layer teacher has no shallower student to search")
    return {LAYER_MAP: Choice(LAYER_MAPS), DEPTH: IntRange(1, teacher_depth - 1)}


def default_space(method: str, teacher_depth: int | None = None) -> dict[str, Distribution]:
    """The search space of ``method``: ``odd``, ``even``, ``lora``, ``distil`` or ``any``.

    Args:
        method: What the study searches.
        teacher_depth: The teacher's encoder layers; ``distil`` and ``any`` need it for the depth's range.
    """
    if method in SPACES:
        return dict(SPACES[method])
    if method not in SHAPE_METHODS:
        raise ConfigError(
            f"no search space for method {method!r}; choose one of {sorted([*SPACES, *SHAPE_METHODS])}"
        )
    if teacher_depth is None:
        raise ConfigError(f"the {method} space needs the teacher's depth")
    distil = {**DISTILLATION_SPACE, **shape_space(teacher_depth)}
    if method == "distil":
        return distil
    branches = {"distil": distil, "lora": LORA_SPACE}
    return {
        METHOD: Choice(ANY_METHODS),
        **{f"{m}{BRANCH}{path}": d for m in ANY_METHODS for path, d in branches[m].items()},
    }


def check_depths(space: SearchSpace, teacher_depth: int) -> None:
    """Refuse a depth range, in any branch of ``space``, outside 1..L-1 for a ``teacher_depth``-layer teacher.

    Raises:
        ConfigError: A depth range reaches 0 or the teacher's own depth.
    """
    for path, distribution in space.items():
        if path.split(BRANCH)[-1] != DEPTH or not isinstance(distribution, IntRange):
            continue
        if distribution.low < 1 or distribution.high > teacher_depth - 1:
            raise ConfigError(
                f"search space entry {path!r} must lie in 1..{teacher_depth - 1} for a {teacher_depth}-layer "
                f"teacher, but got {distribution.low}..{distribution.high}"
            )


def may_draw(space: SearchSpace, weight: str) -> bool:
    """Whether a trial of ``space`` may set loss weight ``weight`` (``"w_hidden"``, say), in any branch.

    A study prepares once what its trials read: the teacher's cached [CLS] states, for one.
    """
    for path, distribution in space.items():
        setting = path.split(BRANCH)[-1]
        if setting == LOSS_WEIGHTS and weight in distribution.names:
            return True
        if setting == f"loss.{weight}":
            return True
    return False


def distribution_from_toml(path: str, spec: Any) -> Distribution:
    """A distribution from a preset entry: ``{low, high, log?}``, ``{int = true, ...}`` or ``{choices}``;
    for ``loss.weights``, ``{simplex = [names], min_cls?}``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"search space entry {path!r} must be a table, but got {spec!r}")
    if path.split(BRANCH)[-1] == LOSS_WEIGHTS:
        if "simplex" not in spec or set(spec) - {"simplex", "min_cls"}:
            raise ConfigError(
                f"search space entry {path!r} needs simplex (the weights drawn) and optionally min_cls, but got {spec}"
            )
        return Simplex(min_cls=spec.get("min_cls", 0.0), names=tuple(spec["simplex"]))
    if set(spec) == {"choices"}:
        return Choice(tuple(spec["choices"]))
    unknown = set(spec) - {"low", "high", "log", "int"}
    if unknown or not {"low", "high"} <= set(spec):
        raise ConfigError(
            f"search space entry {path!r} needs low and high (and optionally log, int), but got {spec}"
        )
    if not spec["low"] <= spec["high"]:
        raise ConfigError(f"search space entry {path!r} needs low <= high, but got {spec}")
    kind = IntRange if spec.get("int") else FloatRange
    return kind(spec["low"], spec["high"], bool(spec.get("log", False)))


def suggest(trial: optuna.Trial, base: TrainConfig, space: SearchSpace) -> TrainConfig:
    """``base`` with every setting in ``space`` drawn for ``trial``.

    In a space with a ``"method"`` entry, the method is drawn first, then its branch's entries only.

    Example:
        >>> config = suggest(trial, TrainConfig(method="lora"), default_space("lora"))
    """
    if METHOD in space:
        method = space[METHOD].suggest(trial, METHOD)
        prefix = f"{method}{BRANCH}"
        branch = {path: d for path, d in space.items() if path.startswith(prefix)}
        base = TrainConfig.from_dict({**base.to_dict(), "method": method})
        return _suggest(trial, base, branch, prefix)
    return _suggest(trial, base, space, "")


def _suggest(trial: optuna.Trial, base: TrainConfig, space: SearchSpace, prefix: str) -> TrainConfig:
    overrides: dict[str, Any] = {}
    for name, distribution in space.items():
        path = name.removeprefix(prefix)
        layer_map = overrides.get("student", {}).get("layer_map", base.student.layer_map)
        if path == DEPTH and layer_map in DEPTH_FIXING_MAPS:
            continue  # odd and even fix the depth: drawing one would only add noise to the sampler
        value = distribution.suggest(trial, name)
        if path == LOSS_WEIGHTS:
            overrides = merge(overrides, {"loss": value})
            continue
        *parents, leaf = path.split(".")
        if isinstance(value, str) and isinstance(_setting(base, path), tuple):
            value = tuple(value.split(","))
        nested: dict[str, Any] = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        overrides = merge(overrides, nested)
    return TrainConfig.from_dict(merge(base.to_dict(), overrides))


def _setting(config: TrainConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def config_paths() -> set[str]:
    """Every setting path a space may name, plus ``loss.weights``."""
    paths = {LOSS_WEIGHTS}
    for field in dataclasses.fields(TrainConfig):
        if not field.metadata.get("cli", True):  # set by the program, never searched
            continue
        value = getattr(TrainConfig(), field.name)
        if dataclasses.is_dataclass(value):
            paths |= {f"{field.name}.{sub.name}" for sub in dataclasses.fields(value)}
        else:
            paths.add(field.name)
    return paths

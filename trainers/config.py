"""Frozen, validated settings for one training run.

Hyperparameters live here; infrastructure (cache folder, progress bars, output folder) is passed to
functions separately, so a search can vary exactly these fields and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from trainers.errors import ConfigError

Method = Literal["odd", "even", "lora", "teacher"]
METHODS: tuple[str, ...] = get_args(Method)
DISTILLATION_METHODS: tuple[str, ...] = ("odd", "even")
MetricName = Literal["macro_f1", "accuracy", "weighted_f1", "roc_auc", "loss"]
METRICS: tuple[str, ...] = get_args(MetricName)

# The training precision's variable (trainers/device.py reads it): what `accelerate launch
# --mixed_precision` sets, so that and `accelerate config` work as usual.
PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
# 1 or 0: whether training on a GPU replays CUDA graphs (trainers/graphs.py); on by default there.
GRAPHS_ENV = "TOXITUNE_CUDA_GRAPHS"
DEFAULT_DATASET = "nicholasKluge/toxic-text"
DEFAULT_TEACHER = "bert-base-uncased"
DEFAULT_LR = {"teacher": 1e-4, "odd": 1e-4, "even": 1e-4, "lora": 5e-4}


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def maximizes(metric: str) -> bool:
    """Whether a higher ``metric`` is better (every metric but ``loss``)."""
    return metric != "loss"


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how many of each split to use."""

    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata=_help("hub dataset id, local folder with train/validation/test files, or one file"),
    )
    hub_split: str | None = field(
        default=None,
        metadata=_help("for a hub dataset: take this one split and divide it 80/10/10"),
    )
    text_column: str = field(default="text", metadata=_help("column holding the text"))
    label_column: str = field(default="label", metadata=_help("column holding the label"))
    label_names: tuple[str, ...] | None = field(
        default=None,
        metadata=_help(
            "names of the classes in label order, e.g. not-offensive,offensive; default: the label values"
        ),
    )
    train_size: int | None = field(default=None, metadata=_help("stratified subsample of the training split"))
    eval_size: int | None = field(
        default=None, metadata=_help("stratified subsample of the validation split")
    )
    test_size: int | None = field(default=None, metadata=_help("stratified subsample of the test split"))
    max_length: int = field(default=128, metadata=_help("tokens kept per text"))
    split_seed: int = field(default=42, metadata=_help("seed for splitting and subsampling"))

    def __post_init__(self) -> None:
        for name in ("train_size", "eval_size", "test_size"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} must be positive, but got {value}")
        _require(self.max_length >= 8, f"max_length must be at least 8, but got {self.max_length}")
        _require(
            self.label_names is None or len(set(self.label_names)) == len(self.label_names),
            f"label names must be distinct, but got {','.join(self.label_names or ())}",
        )


@dataclass(frozen=True)
class TeacherConfig:
    """The pretrained checkpoint and how it is fine-tuned before distillation.

    These settings are fixed for a study, so every trial distils from the same cached teacher.
    """

    name: str = field(
        default=DEFAULT_TEACHER,
        metadata=_help("BERT-family checkpoint: hub id or local folder", flag="teacher"),
    )
    epochs: int = field(
        default=2,
        metadata=_help("fine-tuning epochs before distilling; 0 keeps an untrained head"),
    )
    lr: float = field(default=1e-4, metadata=_help("fine-tuning learning rate"))
    batch_size: int = field(default=32, metadata=_help("fine-tuning batch size"))
    seed: int = field(default=0, metadata=_help("seed of the head initialisation and fine-tuning"))

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, f"teacher epochs must be >= 0, but got {self.epochs}")
        _require(self.lr > 0, f"teacher lr must be positive, but got {self.lr}")
        _require(self.batch_size > 0, f"teacher batch size must be positive, but got {self.batch_size}")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the distillation loss ``w_cls·CE + w_div(epoch)·T²·KL + w_cos·cosine``."""

    w_cls: float = field(default=1 / 3, metadata=_help("weight of cross-entropy on the labels"))
    w_div: float = field(default=1 / 3, metadata=_help("weight of KL divergence to the teacher"))
    w_cos: float = field(default=1 / 3, metadata=_help("weight of the cosine loss on the logits"))
    temperature: float = field(default=2.0, metadata=_help("softmax temperature T of the KL term"))
    div_warmup_epochs: float = field(
        default=0.0,
        metadata=_help("epochs over which w_div ramps linearly from 0; 0 means full from the start"),
    )

    def __post_init__(self) -> None:
        weights = (self.w_cls, self.w_div, self.w_cos)
        _require(min(weights) >= 0, f"loss weights must be >= 0, but got {weights}")
        _require(sum(weights) > 0, f"at least one loss weight must be positive, but got {weights}")
        _require(self.temperature > 0, f"temperature must be positive, but got {self.temperature}")
        _require(
            self.div_warmup_epochs >= 0,
            f"div_warmup_epochs must be >= 0, but got {self.div_warmup_epochs}",
        )


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA adapters on the full-depth model."""

    rank: int = field(default=8, metadata=_help("LoRA rank r"))
    alpha: float = field(default=32.0, metadata=_help("LoRA scaling alpha"))
    dropout: float = field(default=0.1, metadata=_help("dropout on the LoRA input"))
    target_modules: tuple[str, ...] = field(
        default=("query", "key", "value"),
        metadata=_help("comma-separated module names that get adapters, e.g. query,value,dense"),
    )

    def __post_init__(self) -> None:
        _require(self.rank > 0, f"lora rank must be positive, but got {self.rank}")
        _require(self.alpha > 0, f"lora alpha must be positive, but got {self.alpha}")
        _require(0 <= self.dropout < 1, f"lora dropout must be in [0, 1), but got {self.dropout}")
        _require(len(self.target_modules) > 0, "lora target modules must name at least one module")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run of one method."""

    method: Method = field(default="even", metadata=_help("what to train"))
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: int = field(default=3, metadata=_help("training epochs"))
    lr: float | None = field(
        default=None,
        metadata=_help("peak AdamW learning rate (default: 1e-4 for teacher and students, 5e-4 for LoRA)"),
    )
    batch_size: int = field(default=32, metadata=_help("training batch size"))
    eval_batch_size: int = field(default=128, metadata=_help("evaluation batch size"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    warmup_ratio: float = field(default=0.1, metadata=_help("share of steps spent warming up the lr"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm; 0 disables"))
    hidden_dropout: float | None = field(
        default=None, metadata=_help("override the checkpoint's hidden dropout")
    )
    attention_dropout: float | None = field(
        default=None, metadata=_help("override the checkpoint's attention dropout")
    )
    seed: int = field(default=0, metadata=_help("seed of initialisation, batching and dropout"))
    metric: MetricName = field(
        default="macro_f1", metadata=_help("validation metric for early stopping and model choice")
    )
    patience: float = field(
        default=2.0, metadata=_help("epochs without improvement before stopping; 0 never stops")
    )
    evals_per_epoch: int = field(
        default=1,
        metadata=_help("validation evaluations per epoch, evenly spaced; each one can prune or stop a run"),
    )
    collapse_warmup_epochs: float = field(
        default=1.0, metadata=_help("epochs before a run may be declared collapsed")
    )
    collapse_min_steps: int = field(
        default=200,
        metadata=_help("training steps before a run may be declared collapsed (as well as the epochs)"),
    )

    def __post_init__(self) -> None:
        _require(self.method in METHODS, f"method must be one of {METHODS}, but got {self.method!r}")
        _require(self.metric in METRICS, f"metric must be one of {METRICS}, but got {self.metric!r}")
        _require(self.epochs > 0, f"epochs must be positive, but got {self.epochs}")
        if self.lr is None:
            # Frozen: a default that depends on the method is resolved once, here.
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])
        _require(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, but got {self.lr}")
        _require(self.batch_size > 0, f"batch_size must be positive, but got {self.batch_size}")
        _require(
            self.eval_batch_size > 0, f"eval_batch_size must be positive, but got {self.eval_batch_size}"
        )
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, but got {self.weight_decay}")
        _require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), but got {self.warmup_ratio}")
        _require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, but got {self.max_grad_norm}")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            _require(value is None or 0 <= value < 1, f"{name} must be in [0, 1), but got {value}")
        _require(self.patience >= 0, f"patience must be >= 0, but got {self.patience}")
        _require(
            self.evals_per_epoch > 0, f"evals_per_epoch must be positive, but got {self.evals_per_epoch}"
        )
        _require(
            self.collapse_warmup_epochs >= 0,
            f"collapse_warmup_epochs must be >= 0, but got {self.collapse_warmup_epochs}",
        )
        _require(
            self.collapse_min_steps >= 0,
            f"collapse_min_steps must be >= 0, but got {self.collapse_min_steps}",
        )

    @property
    def distills(self) -> bool:
        """Whether this run trains a student against teacher logits."""
        return self.method in DISTILLATION_METHODS

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, ready for JSON, YAML or a tracker's config."""
        return dataclasses.asdict(self)

    def applicable_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the settings ``method`` never reads, for logs and exports.

        ``loss`` and the teacher's fine-tuning settings apply to distillation only, ``lora`` to LoRA
        only; ``teacher.name`` always applies (the checkpoint every method starts from).
        :meth:`from_dict` fills the left-out settings with their defaults, so it rebuilds a config
        that trains the same, and an equal one when those settings were at their defaults.
        """
        values = self.to_dict()
        if not self.distills:
            del values["loss"]
            values["teacher"] = {"name": self.teacher.name}
        if self.method != "lora":
            del values["lora"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        return _from_dict(cls, values)


def _from_dict(cls: type, values: Any) -> Any:
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
        return _from_dict(hint, value)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(arg for arg in args if arg is not type(None)), value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
    elif origin is Literal:
        return value  # checked against the choices by __post_init__, with the list in the message
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where} must be {_describe(hint)}, but got {value!r}")


def _describe(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return "a list of names"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(hint, str(hint))

"""Frozen, validated settings for one training run.

Hyperparameters live here; infrastructure (cache folder, progress bars, output folder) is passed to
functions separately, so a search can vary exactly these fields and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from trainers.errors import ConfigError
from trainers.settings import described, from_dict, require

Method = Literal["odd", "even", "distil", "lora", "teacher"]
METHODS: tuple[str, ...] = get_args(Method)
DISTILLATION_METHODS: tuple[str, ...] = ("odd", "even", "distil")
LayerMap = Literal["odd", "even", "first", "last", "spread"]
LAYER_MAPS: tuple[str, ...] = get_args(LayerMap)
# Maps that fix the student's depth themselves: every odd or every even teacher layer.
DEPTH_FIXING_MAPS: tuple[str, ...] = ("odd", "even")
MetricName = Literal["macro_f1", "accuracy", "weighted_f1", "roc_auc", "loss"]
METRICS: tuple[str, ...] = get_args(MetricName)

# The training precision's variable (trainers/device.py reads it): what `accelerate launch
# --mixed_precision` sets, so that and `accelerate config` work as usual.
PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
# 1 or 0: whether training on a GPU replays CUDA graphs (trainers/graphs.py); on by default there.
GRAPHS_ENV = "TOXITUNE_CUDA_GRAPHS"
DEFAULT_DATASET = "nicholasKluge/toxic-text"
DEFAULT_TEACHER = "bert-base-uncased"
DEFAULT_LR = {"teacher": 1e-4, "odd": 1e-4, "even": 1e-4, "distil": 1e-4, "lora": 5e-4}
TeacherKind = Literal["full", "lora"]
TEACHER_KINDS: tuple[str, ...] = get_args(TeacherKind)


def maximizes(metric: str) -> bool:
    """Whether a higher ``metric`` is better (every metric but ``loss``)."""
    return metric != "loss"


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how many of each split to use."""

    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata=described("hub dataset id, local folder with train/validation/test files, or one file"),
    )
    hub_split: str | None = field(
        default=None,
        metadata=described("for a hub dataset: take this one split and divide it 80/10/10"),
    )
    text_column: str = field(default="text", metadata=described("column holding the text"))
    label_column: str = field(default="label", metadata=described("column holding the label"))
    label_names: tuple[str, ...] | None = field(
        default=None,
        metadata=described(
            "names of the classes in label order, e.g. not-offensive,offensive; default: the label values"
        ),
    )
    train_size: int | None = field(
        default=None, metadata=described("stratified subsample of the training split")
    )
    eval_size: int | None = field(
        default=None, metadata=described("stratified subsample of the validation split")
    )
    test_size: int | None = field(default=None, metadata=described("stratified subsample of the test split"))
    max_length: int = field(default=128, metadata=described("tokens kept per text"))
    split_seed: int = field(default=42, metadata=described("seed for splitting and subsampling"))

    def __post_init__(self) -> None:
        for name in ("train_size", "eval_size", "test_size"):
            value = getattr(self, name)
            require(value is None or value > 0, f"{name} must be positive, but got {value}")
        require(self.max_length >= 8, f"max_length must be at least 8, but got {self.max_length}")
        require(
            self.label_names is None or len(set(self.label_names)) == len(self.label_names),
            f"label names must be distinct, but got {','.join(self.label_names or ())}",
        )


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA adapters on the full-depth model."""

    rank: int = field(default=8, metadata=described("LoRA rank r"))
    alpha: float = field(default=32.0, metadata=described("LoRA scaling alpha"))
    dropout: float = field(default=0.1, metadata=described("dropout on the LoRA input"))
    target_modules: tuple[str, ...] = field(
        default=("query", "key", "value"),
        metadata=described("comma-separated module names that get adapters, e.g. query,value,dense"),
    )

    def __post_init__(self) -> None:
        require(self.rank > 0, f"lora rank must be positive, but got {self.rank}")
        require(self.alpha > 0, f"lora alpha must be positive, but got {self.alpha}")
        require(0 <= self.dropout < 1, f"lora dropout must be in [0, 1), but got {self.dropout}")
        require(len(self.target_modules) > 0, "lora target modules must name at least one module")


@dataclass(frozen=True)
class TeacherConfig:
    """The pretrained checkpoint and how it is fine-tuned before distillation.

    These settings are fixed for a study, so every trial distils from the same cached teacher.
    """

    name: str = field(
        default=DEFAULT_TEACHER,
        metadata=described("BERT-family checkpoint: hub id or local folder", flag="teacher"),
    )
    epochs: int = field(
        default=2,
        metadata=described("fine-tuning epochs before distilling; 0 keeps an untrained head"),
    )
    lr: float = field(default=1e-4, metadata=described("fine-tuning learning rate"))
    batch_size: int = field(default=32, metadata=described("fine-tuning batch size"))
    seed: int = field(default=0, metadata=described("seed of the head initialisation and fine-tuning"))
    warmup_ratio: float = field(
        default=0.1, metadata=described("share of the fine-tuning steps spent warming up the lr")
    )
    weight_decay: float = field(default=0.01, metadata=described("fine-tuning AdamW weight decay"))
    hidden_dropout: float | None = field(
        default=None, metadata=described("override the checkpoint's hidden dropout while fine-tuning")
    )
    attention_dropout: float | None = field(
        default=None, metadata=described("override the checkpoint's attention dropout while fine-tuning")
    )
    kind: TeacherKind = field(
        default="full",
        metadata=described(
            "full: fine-tune every weight; lora: train --teacher-lora-* adapters, then merge them"
        ),
    )
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"prefix": "lora-"})
    ensemble: int = field(
        default=1,
        metadata=described(
            "teachers whose mean signal is distilled: this one and K-1 more, its next seeds or, with "
            "--teacher-from, the study's next best trials; the student is copied from the first"
        ),
    )

    def __post_init__(self) -> None:
        require(self.epochs >= 0, f"teacher epochs must be >= 0, but got {self.epochs}")
        require(self.lr > 0, f"teacher lr must be positive, but got {self.lr}")
        require(self.batch_size > 0, f"teacher batch size must be positive, but got {self.batch_size}")
        require(
            0 <= self.warmup_ratio < 1, f"teacher warmup_ratio must be in [0, 1), but got {self.warmup_ratio}"
        )
        require(self.weight_decay >= 0, f"teacher weight_decay must be >= 0, but got {self.weight_decay}")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            require(value is None or 0 <= value < 1, f"teacher {name} must be in [0, 1), but got {value}")
        require(
            self.kind in TEACHER_KINDS, f"teacher kind must be one of {TEACHER_KINDS}, but got {self.kind!r}"
        )
        require(
            self.ensemble >= 1,
            f"teacher ensemble (--teacher-ensemble) must be at least 1, but got {self.ensemble}",
        )


@dataclass(frozen=True)
class LossConfig:
    """Weights of the distillation loss ``w_cls·CE + w_div(epoch)·T²·KL + w_cos·cosine + w_hidden·hidden + w_attn·attn``.

    ``hidden`` and ``attn`` compare each student layer with the teacher layer it was copied from
    (:func:`trainers.losses.hidden_state_loss`, :func:`trainers.losses.attention_loss`); at weight 0
    they are not computed at all.
    """

    w_cls: float = field(default=1 / 3, metadata=described("weight of cross-entropy on the labels"))
    w_div: float = field(default=1 / 3, metadata=described("weight of KL divergence to the teacher"))
    w_cos: float = field(default=1 / 3, metadata=described("weight of the cosine loss on the logits"))
    w_hidden: float = field(
        default=0.0,
        metadata=described("weight of the distance between normalised [CLS] states of mapped layers (PKD)"),
    )
    w_attn: float = field(
        default=0.0,
        metadata=described("weight of the KL between mapped layers' attention distributions (MiniLM)"),
    )
    temperature: float = field(default=2.0, metadata=described("softmax temperature T of the KL term"))
    div_warmup_epochs: float = field(
        default=0.0,
        metadata=described("epochs over which w_div ramps linearly from 0; 0 means full from the start"),
    )

    def __post_init__(self) -> None:
        names = ("w_cls", "w_div", "w_cos", "w_hidden", "w_attn")
        weights = tuple(getattr(self, name) for name in names)
        for name, weight in zip(names, weights, strict=True):
            require(
                weight >= 0, f"loss weight {name} (--{name.replace('_', '-')}) must be >= 0, but got {weight}"
            )
        require(sum(weights) > 0, f"at least one loss weight must be positive, but got {weights}")
        require(self.temperature > 0, f"temperature must be positive, but got {self.temperature}")
        require(
            self.div_warmup_epochs >= 0,
            f"div_warmup_epochs must be >= 0, but got {self.div_warmup_epochs}",
        )


@dataclass(frozen=True)
class StudentConfig:
    """Which teacher layers a ``distil`` student copies: a layer map and, for most maps, a depth.

    ``odd`` and ``even`` take every odd or even teacher layer, as the methods of those names do;
    ``first``, ``last`` and ``spread`` take ``depth`` layers from the bottom, from the top, or evenly
    spread from the first layer to the last. The teacher's depth L is known only once it is loaded, so
    a depth outside 1..L-1 is refused there (:func:`trainers.models.student_layers`).
    """

    layer_map: LayerMap = field(
        default="spread", metadata=described("which teacher layers the student copies")
    )
    depth: int | None = field(
        default=None,
        metadata=described(
            "encoder layers of a first, last or spread student, 1..L-1 for an L-layer teacher "
            "(default: half the teacher's, rounded down); odd and even fix it themselves"
        ),
    )

    def __post_init__(self) -> None:
        require(
            self.layer_map in LAYER_MAPS,
            f"student layer_map must be one of {LAYER_MAPS}, but got {self.layer_map!r}",
        )
        require(
            self.depth is None or self.depth >= 1, f"student depth must be at least 1, but got {self.depth}"
        )
        require(
            self.depth is None or self.layer_map not in DEPTH_FIXING_MAPS,
            f"student layer_map {self.layer_map} fixes the depth; drop depth {self.depth} or choose first, "
            "last or spread",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines one training run of one method."""

    method: Method = field(
        default="even",
        metadata=described(
            "what to train; distil: a student shaped by --student-layer-map and --student-depth"
        ),
    )
    data: DataConfig = field(default_factory=DataConfig)
    # Nested settings' flags carry their field's prefix: --teacher-epochs, --lora-rank.
    teacher: TeacherConfig = field(default_factory=TeacherConfig, metadata={"prefix": "teacher-"})
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"prefix": "lora-"})
    student: StudentConfig = field(default_factory=StudentConfig, metadata={"prefix": "student-"})
    # Not a flag: search.run --teacher-from fills it from a teacher study's next best trials.
    ensemble: tuple[TeacherConfig, ...] = field(
        default=(),
        metadata=described(
            "the ensemble's teachers after the first, when they differ by more than their seed", cli=False
        ),
    )
    epochs: int = field(default=3, metadata=described("training epochs"))
    lr: float | None = field(
        default=None,
        metadata=described(
            "peak AdamW learning rate (default: 1e-4 for teacher and students, 5e-4 for LoRA)"
        ),
    )
    batch_size: int = field(default=32, metadata=described("training batch size"))
    eval_batch_size: int = field(default=128, metadata=described("evaluation batch size"))
    weight_decay: float = field(default=0.01, metadata=described("AdamW weight decay"))
    warmup_ratio: float = field(default=0.1, metadata=described("share of steps spent warming up the lr"))
    max_grad_norm: float = field(default=1.0, metadata=described("gradient clipping norm; 0 disables"))
    hidden_dropout: float | None = field(
        default=None, metadata=described("override the checkpoint's hidden dropout")
    )
    attention_dropout: float | None = field(
        default=None, metadata=described("override the checkpoint's attention dropout")
    )
    seed: int = field(default=0, metadata=described("seed of initialisation, batching and dropout"))
    metric: MetricName = field(
        default="macro_f1", metadata=described("validation metric for early stopping and model choice")
    )
    patience: float = field(
        default=2.0, metadata=described("epochs without improvement before stopping; 0 never stops")
    )
    evals_per_epoch: int = field(
        default=1,
        metadata=described(
            "validation evaluations per epoch, evenly spaced; each one can prune or stop a run"
        ),
    )
    collapse_warmup_epochs: float = field(
        default=1.0, metadata=described("epochs before a run may be declared collapsed")
    )
    collapse_min_steps: int = field(
        default=200,
        metadata=described("training steps before a run may be declared collapsed (as well as the epochs)"),
    )

    def __post_init__(self) -> None:
        require(self.method in METHODS, f"method must be one of {METHODS}, but got {self.method!r}")
        require(self.metric in METRICS, f"metric must be one of {METRICS}, but got {self.metric!r}")
        require(self.epochs > 0, f"epochs must be positive, but got {self.epochs}")
        if self.lr is None:
            # Frozen: a default that depends on the method is resolved once, here.
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])
        require(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, but got {self.lr}")
        require(self.batch_size > 0, f"batch_size must be positive, but got {self.batch_size}")
        require(self.eval_batch_size > 0, f"eval_batch_size must be positive, but got {self.eval_batch_size}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, but got {self.weight_decay}")
        require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), but got {self.warmup_ratio}")
        require(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, but got {self.max_grad_norm}")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            require(value is None or 0 <= value < 1, f"{name} must be in [0, 1), but got {value}")
        require(self.patience >= 0, f"patience must be >= 0, but got {self.patience}")
        require(self.evals_per_epoch > 0, f"evals_per_epoch must be positive, but got {self.evals_per_epoch}")
        require(
            self.collapse_warmup_epochs >= 0,
            f"collapse_warmup_epochs must be >= 0, but got {self.collapse_warmup_epochs}",
        )
        require(
            self.collapse_min_steps >= 0,
            f"collapse_min_steps must be >= 0, but got {self.collapse_min_steps}",
        )
        require(
            not self.ensemble or len(self.ensemble) == self.teacher.ensemble - 1,
            f"an ensemble of {self.teacher.ensemble} teachers lists {len(self.ensemble) + 1}",
        )

    @property
    def teachers(self) -> tuple[TeacherConfig, ...]:
        """Every teacher distilled from, the first (the student's source) first.

        Listed members (``ensemble``) or, without them, the teacher at seeds ``seed, seed+1, ...``.
        """
        first = dataclasses.replace(self.teacher, ensemble=1)
        if self.ensemble:
            return (first, *self.ensemble)
        return tuple(dataclasses.replace(first, seed=first.seed + i) for i in range(self.teacher.ensemble))

    @property
    def lora_teacher(self) -> bool:
        """Whether this run fine-tunes a teacher through LoRA adapters (merged when it is saved)."""
        return self.method == "teacher" and self.teacher.kind == "lora"

    @property
    def distills(self) -> bool:
        """Whether this run trains a student against teacher logits."""
        return self.method in DISTILLATION_METHODS

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, ready for JSON, YAML or a tracker's config."""
        return dataclasses.asdict(self)

    def applicable_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the settings ``method`` never reads, for logs and exports.

        ``loss``, ``ensemble`` and the teacher's fine-tuning settings apply to distillation only, ``lora``
        to LoRA and a LoRA teacher only, ``student`` to ``distil`` only; ``teacher.name`` always applies
        (the checkpoint every method starts from), and ``teacher.kind`` to a teacher run.
        :meth:`from_dict` fills the left-out settings with their defaults, so it rebuilds a config
        that trains the same, and an equal one when those settings were at their defaults.
        """
        values = self.to_dict()
        if not self.distills:
            del values["loss"]
            del values["ensemble"]
            values["teacher"] = {"name": self.teacher.name}
            if self.method == "teacher":
                values["teacher"]["kind"] = self.teacher.kind
        if self.method != "lora" and not self.lora_teacher:
            del values["lora"]
        if self.method != "distil":
            del values["student"]
        return values

    def matches(self, stored: Any) -> bool:
        """Whether ``stored``, a :meth:`to_dict` of this or an older version, describes this config.

        A setting ``stored`` lacks counts as its default, so a setting added since (at its default)
        keeps checkpoints resumable, studies resumable and cached runs readable; one it holds that this
        version lacks makes it another config.
        """
        try:
            return TrainConfig.from_dict(stored) == self
        except ConfigError:
            return False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        return from_dict(cls, values)

"""What a study is: one frozen, validated settings class, from which ``search.run`` builds its flags.

A study's trials train with a :class:`~trainers.config.TrainConfig` (method, metric, data, teacher,
fixed hyperparameters); a :class:`StudyConfig` settles everything around them: where the study is
stored, how many trials it holds, how they are drawn, cut and tracked.

Example::

    study = StudyConfig(trials=20, name="lora-tweets", storage="sqlite:///studies.db", pruner="median")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from search.objectives import check_objectives, direction
from search.tracking import WandbSettings
from search.urls import DEFAULT_STORAGE
from trainers.config import METRICS, MetricName, maximizes
from trainers.errors import ConfigError
from trainers.settings import described, from_dict, require, setting_name

SamplerName = Literal["tpe", "nsga2", "random"]
PrunerName = Literal["median", "hyperband", "none"]

# Trials the median pruner lets finish before it judges any (Optuna's default): its medians need a few
# full curves, and each of them costs a full trial.
MEDIAN_STARTUP_TRIALS = 5
# Trials TPE draws at random before it models the study (Optuna's default). A study of fewer trials than
# this never leaves random search.
TPE_STARTUP_TRIALS = 10
# Metrics read at a threshold: equal for every trial that still predicts one class.
THRESHOLDED: tuple[MetricName, ...] = ("macro_f1", "accuracy", "weighted_f1")


def default_signal(metric: MetricName) -> MetricName:
    """What a pruner judges unless told: validation ROC AUC for a thresholded ``metric``, else ``metric``.

    At a trial's first reports most trials still predict the majority class, so F1 or accuracy ties
    them all and a median pruner cannot rank them; ROC AUC ranks their probabilities. In real studies
    (benchmarks/RESULTS.md) judging it found the same or a better best F1, mostly for less training.

    Example:
        >>> default_signal("macro_f1"), default_signal("loss")
        ('roc_auc', 'loss')
    """
    return "roc_auc" if metric in THRESHOLDED else metric


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A study: its name and storage, its target, its sampler and pruner, its tracking."""

    trials: int = field(
        metadata=described("finished trials the study should hold (here or in a preset's [study] table)")
    )
    name: str | None = field(
        default=None, metadata=described("study name (default: METHOD-PRESET)", flag="study")
    )
    storage: str = field(default=DEFAULT_STORAGE, metadata=described("Optuna storage URL"))
    objectives: tuple[str, ...] | None = field(
        default=None,
        metadata=described(
            "what the study optimises: validation metrics and latency_ms or params, e.g. macro_f1,latency_ms; "
            "several make a multi-objective study with a Pareto front, whose first metric is also the "
            "trials' --metric (default: the trials' --metric alone)"
        ),
    )
    sampler: SamplerName = field(
        default="tpe", metadata=described("sampler (tpe handles several objectives too; nsga2 is NSGA-II)")
    )
    seed: int = field(
        default=0,
        metadata=described(
            "seed of the sampler; each worker seeds it with this plus the number of its first trial "
            "(the trials' training seed is the training settings' own)"
        ),
    )
    sampler_startup_trials: int = field(
        default=TPE_STARTUP_TRIALS,
        metadata=described(
            "trials TPE draws at random before it models the study; a study of fewer trials stays random"
        ),
    )
    pruner: PrunerName = field(default="median", metadata=described("pruner"))
    pruner_warmup_epochs: float = field(
        default=0.0, metadata=described("epochs a trial trains before the pruner may judge it")
    )
    pruner_patience_epochs: float = field(
        default=0.0,
        metadata=described(
            "spare a trial the pruner would cut while its best improved within this many epochs"
        ),
    )
    pruner_startup_trials: int = field(
        default=MEDIAN_STARTUP_TRIALS,
        metadata=described("trials the median pruner lets finish before it judges any; each runs in full"),
    )
    pruner_signal: MetricName | None = field(
        default=None,
        metadata=described(
            "validation metric the pruner judges (default: roc_auc when the metric is macro_f1, accuracy "
            "or weighted_f1, which tie every trial still predicting one class; else the metric; a "
            "resumed study keeps its own)"
        ),
    )
    timeout: float | None = field(
        default=None, metadata=described("stop starting trials after this many seconds")
    )
    teacher_from: str | None = field(
        default=None,
        metadata=described(
            "distil from the best finished trial of this teacher (or LoRA) study in the same storage, "
            "fine-tuned again with its settings; with --teacher-ensemble K, from its K best",
            flag="teacher-from",
        ),
    )
    wandb: WandbSettings = field(default_factory=WandbSettings, metadata={"prefix": "wandb-"})

    def __post_init__(self) -> None:
        def name(path: str) -> str:
            return setting_name(StudyConfig, path)

        require(self.trials >= 1, f"{name('trials')} must be at least 1, but got {self.trials}")
        require(self.name is None or bool(self.name.strip()), f"{name('name')} must not be empty")
        check_objectives(self.objectives or (), name("objectives"))
        require(
            self.sampler in get_args(SamplerName),
            f"{name('sampler')} must be one of {get_args(SamplerName)}, but got {self.sampler!r}",
        )
        require(
            self.sampler_startup_trials >= 1,
            f"{name('sampler_startup_trials')} must be at least 1, but got {self.sampler_startup_trials}",
        )
        require(
            self.pruner in get_args(PrunerName),
            f"{name('pruner')} must be one of {get_args(PrunerName)}, but got {self.pruner!r}",
        )
        for path in ("pruner_warmup_epochs", "pruner_patience_epochs"):
            value = getattr(self, path)
            require(value >= 0, f"{name(path)} must be >= 0, but got {value}")
        require(
            self.pruner_startup_trials >= 1,
            f"{name('pruner_startup_trials')} must be at least 1, but got {self.pruner_startup_trials}",
        )
        require(
            self.pruner_signal is None or self.pruner_signal in METRICS,
            f"{name('pruner_signal')} must be one of {METRICS}, but got {self.pruner_signal!r}",
        )
        require(
            self.timeout is None or self.timeout > 0,
            f"{name('timeout')} must be positive, but got {self.timeout}",
        )
        require(
            self.teacher_from is None or bool(self.teacher_from.strip()),
            f"{name('teacher_from')} must name a study",
        )

    @property
    def multi_objective(self) -> bool:
        """Whether the study has several objectives, and so a Pareto front instead of a best trial."""
        return len(self.objectives or ()) > 1

    def directions(self, metric: MetricName) -> list[str]:
        """Each objective's direction, or that of ``metric``, the trials' metric, in a single-objective study."""
        return [direction(name) for name in self.objectives or (metric,)]

    def signal_for(self, metric: MetricName) -> MetricName:
        """What the pruner judges in a study of ``metric``: :attr:`pruner_signal`, or the default for it.

        Raises:
            ConfigError: The signal improves the other way from ``metric``.
        """
        signal = self.pruner_signal or default_signal(metric)
        if maximizes(signal) != maximizes(metric):
            direction = "maximize" if maximizes(metric) else "minimize"
            raise ConfigError(
                f"{setting_name(StudyConfig, 'pruner_signal')} {signal} improves the other way from the "
                f"study's metric {metric}, which the study {direction}s; choose a signal that improves with it"
            )
        return signal

    def recorded(self) -> dict[str, Any]:
        """What a stored study keeps of these settings: not its own name, the storage (which may hold a
        password) or where this process tracks it."""
        values = dataclasses.asdict(self)
        for key in ("name", "storage", "wandb"):
            del values[key]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyConfig:
        """Rebuild settings from a dict (a preset's ``[study]`` table merged with flags); unknown keys are an error."""
        if "trials" not in values:
            raise ConfigError(
                f"{setting_name(cls, 'trials')} is required: pass --trials N or set it in the preset's [study] table"
            )
        return from_dict(cls, values)

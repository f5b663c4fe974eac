"""A study's objectives: validation metrics and what the shipped model costs, and which way each improves.

``--objectives macro_f1,latency_ms`` makes a multi-objective study whose trials return their best
validation macro-F1 and the CPU latency of their architecture. Costs are figures of the architecture,
not of the trained weights, so the study measures each architecture once and keeps the figure in its
user attribute ``architectures``: trials of one shape share it, and timing noise cannot reorder them.
The protocol and the machine are kept beside it, in ``latency_protocol``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from trainers.config import METRICS, MetricName, TrainConfig, maximizes
from trainers.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from search.config import StudyConfig
    from trainers.efficiency import LatencyProtocol
    from trainers.task import Task

COSTS = ("latency_ms", "params")
OBJECTIVES: tuple[str, ...] = (*METRICS, *COSTS)
ARCHITECTURES = "architectures"
LATENCY_PROTOCOL = "latency_protocol"


def check_objectives(objectives: Sequence[str], flag: str) -> None:
    """Refuse unknown or repeated objectives, and a list without a validation metric.

    Args:
        objectives: The names, as given.
        flag: How the setting is named in messages, e.g. ``objectives (--objectives)``.

    Raises:
        ConfigError: One of the above.
    """
    for name in objectives:
        if name not in OBJECTIVES:
            raise ConfigError(f"{flag}: unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    for name in objectives:
        if list(objectives).count(name) > 1:
            raise ConfigError(f"{flag} names {name} twice; give each objective once")
    if objectives and not any(name in METRICS for name in objectives):
        raise ConfigError(f"{flag} has no validation metric to train for; add one of {', '.join(METRICS)}")


def direction(objective: str) -> Literal["maximize", "minimize"]:
    """Which way ``objective`` improves: costs and the loss go down, other metrics up."""
    return "maximize" if objective not in COSTS and maximizes(objective) else "minimize"


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Whether each point is non-dominated: no other point is as good in every objective and better in one.

    Equal points do not dominate each other, so both stay on the front.

    Example:
        >>> pareto_front([[0.9, 5.0], [0.8, 2.0], [0.7, 3.0]], ["maximize", "minimize"])
        [True, True, False]
    """
    signs = [1 if d == "maximize" else -1 for d in directions]
    signed = [[s * v for s, v in zip(signs, point, strict=True)] for point in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [not any(dominates(other, point) for other in signed) for point in signed]


def quality_metric(objectives: Sequence[str]) -> MetricName:
    """The first validation metric among ``objectives``: what trials stop early on and keep their best by."""
    return next(name for name in objectives if name in METRICS)  # type: ignore[return-value]


def resolve_objectives(study: StudyConfig, base: TrainConfig) -> tuple[StudyConfig, TrainConfig]:
    """``study`` and ``base`` made consistent with ``study.objectives``, with a notice for what changed.

    - One objective is a single-objective study of that metric: the objectives are dropped and the
      metric becomes the trials' ``metric``.
    - Several make the first metric among them the trials' ``metric``, and replace any pruner by
      ``none``: Optuna's pruners judge one value, and one that judged quality alone would cut fast,
      weaker shapes that belong on the front. Early stopping and collapse detection still end bad runs.
    """
    objectives = study.objectives or ()
    if len(objectives) == 1:
        (metric,) = objectives
        _notice(f"one objective is a single-objective study of {metric}; running it as --metric {metric}")
        return dataclasses.replace(study, objectives=None), dataclasses.replace(base, metric=metric)
    if not objectives:
        return study, base
    if study.pruner != "none":
        _notice(
            f"pruner {study.pruner} judges one objective, so this multi-objective study runs with pruner none; "
            "early stopping and collapse detection still end bad trials"
        )
        study = dataclasses.replace(study, pruner="none")
    return study, dataclasses.replace(base, metric=quality_metric(objectives))


def _notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr, flush=True)


def busy(load: float, *, threads: int, cores: int) -> bool:
    """Whether a load average leaves fewer idle cores than a latency measurement's ``threads``.

    The load counts the measuring process itself, so an otherwise idle machine reads about one.

    Example:
        >>> busy(1.0, threads=1, cores=2), busy(2.6, threads=1, cores=2)
        (False, True)
    """
    return load - 1 > cores - threads


def shipped_cpu_model(model: nn.Module) -> nn.Module:
    """A CPU, float32 copy of ``model`` as it ships: LoRA adapters merged into the full model."""
    from trainers.models import shipped_model

    shipped = shipped_model(model)
    # Moved and cast on a copy: the trained model stays where training left it.
    return (copy.deepcopy(shipped) if shipped is model else shipped).float().cpu()


def architecture_key(model: nn.Module) -> str:
    """What identifies a shipped model's architecture within a study (whose teacher is fixed)."""
    config = model.config
    return (
        f"{config.model_type}-{config.num_hidden_layers}x{config.hidden_size}"
        f"-ffn{config.intermediate_size}-heads{config.num_attention_heads}"
    )


def architecture_costs(
    study: optuna.Study, model: nn.Module, task: Task, protocol: LatencyProtocol
) -> dict[str, Any]:
    """The costs of ``model``'s architecture: read from the study, or measured once and stored there.

    Args:
        study: The study whose ``architectures`` attribute caches the figures.
        model: The trained model (any device; a LoRA model is merged for the measurement).
        task: Its task, for the validation texts and the tokenizer.
        protocol: How latency is measured; the study records it with the machine.

    Returns:
        ``{"architecture": key, "latency_ms": …, "params": …}``.
    """
    from trainers.efficiency import median_length_texts, model_latency_ms

    key = architecture_key(model)  # a LoRA model's config is its base model's, which it merges into
    cached = study.user_attrs.get(ARCHITECTURES, {})
    if key not in cached:
        shipped = shipped_cpu_model(model)
        texts = median_length_texts(task.splits.validation.texts, task.tokenizer, protocol.max_length)
        figures = {
            "latency_ms": model_latency_ms(shipped, task.tokenizer, texts, protocol),
            "params": sum(p.numel() for p in shipped.parameters()),
            # Kept so that a figure taken on a busy machine can be told from the others afterwards.
            "load": round(os.getloadavg()[0], 2),
        }
        if busy(figures["load"], threads=protocol.threads, cores=os.cpu_count() or 1):
            _notice(
                f"latency of {key} measured with load average {figures['load']} on {os.cpu_count()} cores; "
                "other work inflates it, and the study keeps this figure for every trial of this shape"
            )
        # Read again just before writing: another worker may have stored other shapes, or this one, meanwhile.
        cached = {key: figures, **study.user_attrs.get(ARCHITECTURES, {})}
        study.set_user_attr(ARCHITECTURES, cached)
        if LATENCY_PROTOCOL not in study.user_attrs:
            study.set_user_attr(LATENCY_PROTOCOL, protocol.record())
    return {"architecture": key, **cached[key]}

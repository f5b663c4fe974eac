"""toxitune's Python API: run a study, export its best trials, retrain them over seeds.

The command-line entry points are thin shells over these functions, and the benchmarks call them.

Example::

    from search.api import StudyConfig, TrainConfig, export_best, retrain, run_study
    from studies.presets import load_preset

    preset = load_preset("quickstart")
    base = TrainConfig.from_dict({**preset.config, "method": "lora"})
    study = run_study(StudyConfig(trials=3, storage="sqlite:///demo.db"), base, preset=preset)
    document = export_best(study.study_name, "sqlite:///demo.db", top_k=1, out=Path("best.yaml"))
    report = retrain(document, seeds=2, out=Path("runs/best"))
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage

from search.config import StudyConfig
from search.export import export_best, export_pareto
from search.objectives import resolve_objectives
from search.storage import open_storage
from search.study import (
    best_trial,
    finished_count,
    open_study,
    pin_attr,
    run_until,
    shortfall,
    stored_attr,
    study_exists,
    trial_rows,
)
from search.teachers import with_teachers_from
from search.tracking import StudyTracker
from search.train import retrain
from search.urls import new_storage_file, redact
from studies.presets import Preset, search_space
from studies.spaces import BRANCH, DEPTH, METHOD, SHAPE_METHODS, SearchSpace, check_depths, may_draw
from trainers.config import TrainConfig
from trainers.errors import ToxituneError

if TYPE_CHECKING:
    from trainers.task import Task

__all__ = ["StudyConfig", "TrainConfig", "export_best", "export_pareto", "retrain", "run_study"]


class _SilentAfterInterrupt(logging.Filter):
    """Drops Optuna's log records from the one about a trial stopped by Ctrl-C on: the run is ending."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
        return not self.interrupted


def run_study(
    study: StudyConfig,
    base: TrainConfig,
    *,
    space: SearchSpace | None = None,
    preset: Preset | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> optuna.Study:
    """Run ``study`` of ``base.method`` until it holds ``study.trials`` finished trials.

    With several ``study.objectives`` the study is multi-objective (see
    :func:`~search.objectives.resolve_objectives` for what that changes, with a notice).
    An existing study of that name is resumed: only the missing trials run. A new one is created only
    once its data and teacher are ready, so a command that fails leaves no study behind, nor a
    database file it had just created.

    Args:
        study: Where the study is stored, its target, sampler, pruner and tracking.
        base: The trials' fixed training settings, the method and metric included; ``space`` draws the rest.
        space: What the trials search (default: ``base.method``'s space, as ``preset`` widens it); one
            with a ``"method"`` entry searches the method too (``any``).
        preset: The preset the settings came from; it names the study by default and tags its runs.
        cache_dir: Cache for tokens and teachers (default: ``~/.cache/toxitune``).
        progress: Show a live line per trial, not only the finished ones.

    Returns:
        The study with its trials.

    Raises:
        ToxituneError: A setting, the data, the teacher or the storage is wrong.
    """
    study, base = resolve_objectives(study, base)
    if study.teacher_from is not None:
        base = with_teachers_from(base, study.teacher_from, study.storage)
    if space is None:
        space = search_space(base.method, preset, teacher_depth=teacher_depth(base))
    check_shapes(base, space)
    study = dataclasses.replace(
        study, name=study.name or f"{searched_method(base, space)}-{preset.name if preset else 'custom'}"
    )
    study.signal_for(base.metric)  # a signal that improves the other way is refused before anything is opened
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_SILENT_AFTER_INTERRUPT)
    new_file = new_storage_file(study.storage)
    storage = open_storage(study.storage)
    try:
        return _run(study, base, storage, space=space, preset=preset, cache_dir=cache_dir, progress=progress)
    except BaseException:
        if new_file is not None and not optuna.get_all_study_names(storage):
            new_file.unlink(missing_ok=True)
        raise


_SILENT_AFTER_INTERRUPT = _SilentAfterInterrupt()


def searched_method(base: TrainConfig, space: SearchSpace) -> str:
    """What a study of ``base`` over ``space`` searches: ``any`` when the space draws the method."""
    return "any" if METHOD in space else base.method


def teacher_depth(base: TrainConfig) -> int:
    """The encoder layers of ``base``'s teacher, read from its config without loading weights."""
    from trainers.models import load_model_config

    return load_model_config(base.teacher.name).num_hidden_layers


def check_shapes(base: TrainConfig, space: SearchSpace) -> None:
    """Refuse a student depth outside 1..L-1, searched or fixed, before anything is opened or trained.

    Raises:
        ConfigError: The space's depth range, or ``base``'s fixed depth, does not fit the teacher.
    """
    searches_shape = base.method in SHAPE_METHODS or METHOD in space
    if not searches_shape:
        return
    depth = teacher_depth(base)
    check_depths(space, depth)
    if not any(path.split(BRANCH)[-1] == DEPTH for path in space):
        from trainers.models import config_layers

        config_layers(base, depth)


def _run(
    config: StudyConfig,
    base: TrainConfig,
    storage: BaseStorage,
    *,
    space: SearchSpace,
    preset: Preset | None,
    cache_dir: Path | None,
    progress: bool,
) -> optuna.Study:
    from search.objective import Objective
    from trainers.cache import default_cache_dir
    from trainers.efficiency import LatencyProtocol
    from trainers.prepare import describe_teacher, prepare_task

    # A study resumed without a signal keeps the one it was created with, even an older default.
    stored_signal = stored_attr(storage, config.name, "pruner_signal")
    signal = config.pruner_signal or stored_signal or config.signal_for(base.metric)
    config = dataclasses.replace(config, pruner_signal=signal)
    stored_base = stored_attr(storage, config.name, "base_config")

    def study_in_storage() -> optuna.Study:
        return open_study(
            config,
            storage=storage,
            directions=config.directions(base.metric),
            evaluations=base.epochs * base.evals_per_epoch,
            evals_per_epoch=base.evals_per_epoch,
            attrs={
                "method": searched_method(base, space),
                "metric": base.metric,
                "objectives": list(config.objectives or (base.metric,)),
                "pruner_signal": signal,
                "preset": preset.name if preset else None,
                # A stored config that rebuilds this one (settings added since at their defaults) stands.
                "base_config": stored_base if base.matches(stored_base) else base.to_dict(),
                "space": {path: repr(distribution) for path, distribution in space.items()},
            },
        )

    # An existing study is checked against these settings before any data is read; a new one is
    # created only once its data and teacher are ready, so a bad path leaves no study pinned to it.
    where = f"study {config.name!r} in {redact(config.storage)}"
    study = None
    if study_exists(storage, config.name):
        # A study with trials but without toxitune's attributes is someone else's. One with neither is
        # being created by another worker right now (its attributes follow): it is joined.
        if stored_attr(storage, config.name, "method") is None and storage.get_n_trials(
            storage.get_study_id_from_name(config.name)
        ):
            raise ToxituneError(f"{where} was not created by toxitune; pass another --study")
        study = study_in_storage()
        print(f"{where}: {finished_count(study)}/{config.trials} trials finished")
        if finished_count(study) >= config.trials:
            return study

    task = prepare_task(
        base,
        cache_dir=cache_dir or default_cache_dir(),
        progress=progress,
        cls_states=may_draw(space, "w_hidden"),
    )
    if task.teacher_metrics:
        print(describe_teacher(task.teacher_metrics, base.metric))
    if study is None:
        study = study_in_storage()
        print(f"{where}: created, 0/{config.trials} trials finished")
    pin_attr(study, "data", data_record(base, task))
    tracker = StudyTracker(
        config.wandb,
        study_name=config.name,
        method=searched_method(base, space),
        tags=[preset.name] if preset else [],
    )
    objective = Objective(
        base=base,
        space=space,
        task=task,
        tracker=tracker,
        signal=signal,
        progress=progress,
        objectives=config.objectives if config.multi_objective else (),
        latency=LatencyProtocol(max_length=base.data.max_length),
    )
    abandoned = run_until(study, objective, config)
    if abandoned:
        print(f"marked trials {abandoned} FAIL: their worker died mid-trial")
    if missing := shortfall(study, config):
        print(f"warning: {missing}", file=sys.stderr)
    best = best_trial(study)
    tracker.log_study(
        trial_rows(study), best_value=best.value if best else None, best_trial=best.number if best else None
    )
    return study


def data_record(config: TrainConfig, task: Task) -> dict[str, Any]:
    """What identifies a study's data: its source, label names, split sizes and content fingerprint."""
    splits = task.splits
    return {
        "source": config.data.dataset,
        "label_names": list(task.label_names),
        "sizes": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "fingerprint": splits.fingerprint(),
    }

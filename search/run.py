"""Run a study: ``python -m search.run --method lora --trials 50 --preset quickstart``.

``--trials`` is the study's target: rerunning the same command after a crash or Ctrl-C runs only the
missing trials. Every trial is one W&B run, grouped by study.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage

from search.progress import format_params
from search.pruners import MEDIAN_STARTUP_TRIALS, default_signal
from search.storage import DEFAULT_STORAGE, new_storage_file, open_storage, redact
from search.study import (
    StudySettings,
    best_trial,
    finished_count,
    open_study,
    pin_attr,
    run_until,
    shortfall,
    state_counts,
    stored_attr,
    trial_rows,
)
from search.tracking import StudyTracker, WandbSettings
from studies.presets import Preset, available_presets, load_preset
from studies.spaces import LOSS_WEIGHTS, SearchSpace, default_space, readable_params
from trainers.cli import ArgumentParser, add_config_arguments, config_overrides, merge, run_main
from trainers.config import METRICS, TrainConfig, maximizes

if TYPE_CHECKING:
    from trainers.task import Task

SEARCH_METHODS = ("odd", "even", "lora")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.run",
        description="Tune one compression method with an Optuna study; every trial is logged to W&B.",
    )
    parser.add_argument("--method", required=True, choices=SEARCH_METHODS, help="what to tune")
    parser.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    parser.add_argument("--preset", help=f"study preset: {', '.join(available_presets())}, or a .toml file")
    parser.add_argument("--study", help="study name (default: METHOD-PRESET)")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})"
    )
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="sampler (default: tpe)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sampler and of every trial's training (default: 0); each worker seeds its "
        "sampler with it plus the number of its first trial",
    )
    parser.add_argument(
        "--pruner", choices=("median", "hyperband", "none"), default="median", help="(default: median)"
    )
    parser.add_argument(
        "--pruner-warmup-epochs",
        type=float,
        default=0.0,
        help="epochs a trial trains before the pruner may judge it (default: 0, from its first report)",
    )
    parser.add_argument(
        "--pruner-patience-epochs",
        type=float,
        default=0.0,
        help="spare a trial the pruner would cut while its best improved within this many epochs "
        "(default: 0, cut on the pruner's word)",
    )
    parser.add_argument(
        "--pruner-startup-trials",
        type=int,
        default=MEDIAN_STARTUP_TRIALS,
        help=f"trials the median pruner lets finish before it judges any; each runs in full "
        f"(default: {MEDIAN_STARTUP_TRIALS})",
    )
    parser.add_argument(
        "--pruner-signal",
        choices=METRICS,
        help="validation metric the pruner judges (default: roc_auc when --metric is macro_f1, accuracy or "
        "weighted_f1, which tie every trial still predicting one class; else --metric; a resumed study "
        "keeps its own)",
    )
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument(
        "--metric", choices=METRICS, default="macro_f1", help="validation metric (default: macro_f1)"
    )
    parser.add_argument("--wandb-project", default="toxitune", help="W&B project (default: toxitune)")
    parser.add_argument("--wandb-entity", help="W&B entity (default: your default entity)")
    parser.add_argument(
        "--wandb-mode",
        choices=("online", "offline", "disabled"),
        help="W&B mode (default: online with an API key, else offline for `wandb sync`)",
    )
    parser.add_argument("--wandb-dir", type=Path, help="where W&B keeps its files (default: ./wandb)")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache for tokens and teachers (default: ~/.cache/toxitune)"
    )
    parser.add_argument("--no-progress", action="store_true", help="print finished trials only")
    group = parser.add_argument_group(
        "training settings (fixed for every trial; a searched one given here is fixed)"
    )
    add_config_arguments(group, exclude=("method", "metric", "seed"))
    return parser


def search_space(method: str, preset: Preset | None, fixed: set[str]) -> SearchSpace:
    """The method's space, widened or narrowed by the preset, without the settings fixed on the command line."""
    space = {**default_space(method), **(preset.space if preset else {})}
    if fixed & {"loss.w_cls", "loss.w_div", "loss.w_cos"}:
        space.pop(LOSS_WEIGHTS, None)
    return {path: dist for path, dist in space.items() if path not in fixed}


def data_record(config: TrainConfig, task: Task) -> dict[str, Any]:
    """What identifies a study's data: its source, label names, split sizes and content fingerprint."""
    splits = task.splits
    return {
        "source": config.data.dataset,
        "label_names": list(task.label_names),
        "sizes": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "fingerprint": splits.fingerprint(),
    }


def _flat_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        paths |= _flat_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = load_preset(args.preset) if args.preset else None
    overrides = config_overrides(args)
    base = TrainConfig.from_dict(
        merge(
            merge(TrainConfig(method=args.method).to_dict(), preset.config if preset else {}),
            {**overrides, "method": args.method, "metric": args.metric},
        )
    )
    space = search_space(args.method, preset, _flat_paths(overrides))
    # Every setting is checked before the storage is opened, so a typo creates no database.
    settings = StudySettings(
        name=args.study or f"{args.method}-{preset.name if preset else 'custom'}",
        storage=args.storage,
        trials=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        pruner=args.pruner,
        pruner_warmup_epochs=args.pruner_warmup_epochs,
        pruner_patience_epochs=args.pruner_patience_epochs,
        pruner_signal=args.pruner_signal or default_signal(args.metric),
        pruner_startup_trials=args.pruner_startup_trials,
        timeout=args.timeout,
        direction="maximize" if maximizes(args.metric) else "minimize",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs a trial that Ctrl-C stopped with a long traceback before re-raising; run_main says it in a line.
    logging.getLogger("optuna.study._optimize").addFilter(_SilentAfterInterrupt())
    new_file = new_storage_file(args.storage)
    storage = open_storage(args.storage)
    try:
        return _run(args, settings, storage, base=base, space=space, preset=preset)
    except BaseException:
        # A command that fails before its study holds anything leaves no empty database behind.
        if new_file is not None and not optuna.get_all_study_names(storage):
            new_file.unlink(missing_ok=True)
        raise


def _run(
    args: argparse.Namespace,
    settings: StudySettings,
    storage: BaseStorage,
    *,
    base: TrainConfig,
    space: SearchSpace,
    preset: Preset | None,
) -> int:
    from search.objective import Objective
    from trainers.cache import default_cache_dir
    from trainers.prepare import prepare_task

    if not args.pruner_signal and (stored := stored_attr(storage, settings.name, "pruner_signal")):
        # A study resumed without --pruner-signal keeps the signal it was created with, even an older default.
        settings = dataclasses.replace(settings, pruner_signal=stored)

    def study_in_storage() -> optuna.Study:
        return open_study(
            settings,
            storage=storage,
            evaluations=base.epochs * base.evals_per_epoch,
            evals_per_epoch=base.evals_per_epoch,
            attrs={
                "method": args.method,
                "metric": args.metric,
                "pruner_signal": settings.pruner_signal,
                "preset": preset.name if preset else None,
                "base_config": base.to_dict(),
                "space": {k: repr(v) for k, v in space.items()},
            },
        )

    # An existing study is checked against these settings before any data is read; a new one is
    # created only once its data and teacher are ready, so a bad path leaves no study pinned to it.
    study = study_in_storage() if stored_attr(storage, settings.name, "method") is not None else None
    done = finished_count(study) if study is not None else 0
    print(f"study {settings.name!r} in {redact(settings.storage)}: {done}/{settings.trials} trials finished")
    if study is not None and done >= settings.trials:
        _print_summary(study, args.metric, 0.0)
        return 0

    started = time.monotonic()
    task = prepare_task(base, cache_dir=args.cache_dir or default_cache_dir(), progress=not args.no_progress)
    if task.teacher_metrics:
        print(f"teacher: validation {args.metric} {task.teacher_metrics['validation'][args.metric]:.4f}")
    study = study or study_in_storage()
    pin_attr(study, "data", data_record(base, task))
    tracker = StudyTracker(
        WandbSettings(
            project=args.wandb_project, entity=args.wandb_entity, mode=args.wandb_mode, dir=args.wandb_dir
        ),
        study_name=settings.name,
        method=args.method,
        tags=[preset.name] if preset else [],
    )
    objective = Objective(
        base=base,
        space=space,
        task=task,
        tracker=tracker,
        signal=settings.pruner_signal,
        progress=not args.no_progress,
    )
    orphans = run_until(study, objective, settings)
    if orphans:
        print(f"marked trials {orphans} FAIL: their worker died mid-trial")
    if missing := shortfall(study, settings):
        print(f"warning: {missing}", file=sys.stderr)
    best = best_trial(study)
    tracker.log_study(
        trial_rows(study),
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
    )
    _print_summary(study, args.metric, time.monotonic() - started)
    return 0


class _SilentAfterInterrupt(logging.Filter):
    """Drops Optuna's log records from the one about a trial stopped by Ctrl-C on: the command is ending."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
        return not self.interrupted


def _print_summary(study: optuna.Study, metric: str, seconds: float) -> None:
    counts = state_counts(study)
    shown = ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "collapsed", "diverged", "failed"))
    print(f"trials: {shown}; wall time {seconds / 60:.1f} min")
    best = best_trial(study)
    if best is not None:
        print(f"best: trial {best.number}, validation {metric} {best.value:.4f}")
        params = readable_params(best.params, best.user_attrs)
        print(f"  {format_params(params)}")
        print(f"  all params: {params}")


if __name__ == "__main__":
    run_main(main)

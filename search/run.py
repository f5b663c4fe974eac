"""Run a study: ``python -m search.run --method lora --trials 50 --preset quickstart``.

``--trials`` is the study's target: rerunning the same command after a crash or Ctrl-C runs only the
missing trials. Every trial is one W&B run, grouped by study. The flags are generated from
:class:`~search.config.StudyConfig` and :class:`~trainers.config.TrainConfig`; this module is a thin
shell over :func:`search.api.run_study`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from search.config import StudyConfig
from search.objectives import quality_metric
from search.progress import format_params
from studies.presets import available_presets, load_preset, search_space
from studies.spaces import SHAPE_METHODS, readable_params
from trainers.cli import ArgumentParser, add_config_arguments, config_overrides, merge, run_main
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.settings import setting_paths

if TYPE_CHECKING:
    import optuna

SEARCH_METHODS = ("odd", "even", "lora", "distil", "any", "teacher")
# Where StudyConfig's settings land in the parsed arguments, apart from TrainConfig's.
STUDY = "study."


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.run",
        description=(
            "Tune a compression method (or, with --method any, several), or the teacher's own fine-tuning "
            "(--method teacher, for --teacher-from), with an Optuna study, against one objective or several; "
            "every trial is logged to W&B."
        ),
    )
    parser.add_argument("--preset", help=f"study preset: {', '.join(available_presets())}, or a .toml file")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache for tokens and teachers (default: ~/.cache/toxitune)"
    )
    parser.add_argument("--no-progress", action="store_true", help="print finished trials only")
    add_config_arguments(parser.add_argument_group("study settings"), StudyConfig, namespace=STUDY)
    group = parser.add_argument_group(
        "training settings (fixed for every trial; a searched one given here is fixed)"
    )
    # The study's --seed seeds its sampler; the trials' training seed comes from a preset or the default.
    add_config_arguments(group, exclude=("seed",), choices={"method": SEARCH_METHODS}, required=("method",))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported once the arguments are good, so that --help and a typo answer at once.
    from search.api import run_study, teacher_depth

    preset = load_preset(args.preset) if args.preset else None
    # The any space draws each trial's method; its fixed settings start from a distillation run's.
    method = "distil" if args.method == "any" else args.method
    overrides = {**config_overrides(args), "method": method}
    base = TrainConfig.from_dict(
        merge(merge(TrainConfig(method=method).to_dict(), preset.config if preset else {}), overrides)
    )
    study = StudyConfig.from_dict(
        merge(preset.study if preset else {}, config_overrides(args, StudyConfig, namespace=STUDY))
    )
    if study.objectives and "metric" in overrides and overrides["metric"] != quality_metric(study.objectives):
        raise ConfigError(
            f"--metric {overrides['metric']} disagrees with --objectives {','.join(study.objectives)}, whose "
            f"first metric ({quality_metric(study.objectives)}) the trials train for; drop --metric"
        )
    depth = teacher_depth(base) if args.method in SHAPE_METHODS else None
    fixed = setting_paths(overrides) - {"method"}
    space = search_space(args.method, preset, fixed=fixed, teacher_depth=depth)
    started = time.monotonic()
    result = run_study(
        study, base, space=space, preset=preset, cache_dir=args.cache_dir, progress=not args.no_progress
    )
    if not _print_summary(result, time.monotonic() - started):
        print(
            f"error: no trial of study {result.study_name!r} completed (see the reasons above), so there is "
            "nothing to export",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_summary(study: optuna.Study, seconds: float) -> bool:
    """Print the outcomes and the best trial, or the Pareto front; return whether there is one."""
    from search.study import best_trial, pareto_trials, state_counts

    counts = state_counts(study)
    shown = ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "collapsed", "diverged", "failed"))
    print(f"trials: {shown}; wall time {seconds / 60:.1f} min")
    metric = study.user_attrs["metric"]
    if len(study.directions) > 1:
        objectives = study.user_attrs["objectives"]
        front = pareto_trials(study)
        print(f"Pareto front of {', '.join(objectives)}: {len(front)} trials")
        for trial in front:
            values = ", ".join(
                f"{name} {value:.4g}" for name, value in zip(objectives, trial.values, strict=True)
            )
            print(
                f"  trial {trial.number}: {values}; {format_params(readable_params(trial.params, trial.user_attrs))}"
            )
        return bool(front)
    best = best_trial(study)
    if best is not None:
        print(f"best: trial {best.number}, validation {metric} {best.value:.4f}")
        params = readable_params(best.params, best.user_attrs)
        print(f"  {format_params(params)}")
        print(f"  all params: {params}")
    return best is not None


if __name__ == "__main__":
    run_main(main)

"""Quality: the original study's hand-picked recipe against the best config a study finds, per method.

Each is retrained over the same seeds and evaluated once per seed on test; the benchmark reports test
macro-F1 (mean ± 95% CI) and accuracy. Targets: tuned beats recipe by at least 2 points for every
method, and tuned LoRA is within 1 point of the best student.

    python benchmarks/quality.py --trials 20 --seeds 3 --json quality.json

A study's best trial is the luckiest of its draws on validation. ``--top-k K`` retrains its K best
trials over the seeds and scores on test the one with the best mean validation, the configuration
``search.train --top-k K`` would ship; the recipe is one configuration, retrained as before.

``--jobs N`` runs N worker processes: each study gets N workers sharing its storage, then every
(configuration, seed) run is trained N at a time. On a GPU, where a model this small keeps the device
mostly idle, that is what brings the full-scale benchmark within minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    SUBSET_FLAGS,
    add_data_arguments,
    add_jobs_argument,
    add_study_arguments,
    add_top_k_argument,
    base_config,
    cache_folder,
    machine,
    run_study_in_worker,
    submit_seed_runs,
    wait_all,
    worker_pool,
    working_folder,
    write_json,
)
from search.api import StudyConfig, run_study  # noqa: E402
from search.export import export_study, load_study  # noqa: E402
from search.tracking import WandbSettings  # noqa: E402
from search.train import format_mean_ci, retrain_candidate, retrain_top_candidates  # noqa: E402
from studies.recipes import recipe  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.config import DataConfig, TrainConfig  # noqa: E402
from trainers.errors import ConfigError  # noqa: E402

METHODS = ("odd", "even", "lora")


def study_storage(workdir: Path) -> str:
    # A journal file, not SQLite: several worker processes write to it at once.
    return f"journal:{workdir}/quality.log"


def study_configs(method: str, args: argparse.Namespace, workdir: Path) -> tuple[StudyConfig, TrainConfig]:
    """The study settings and trials' training settings of ``method``'s tuning study (the same for each worker)."""
    study = StudyConfig(
        trials=args.trials,
        name=f"quality-{method}",
        storage=study_storage(workdir),
        wandb=WandbSettings(mode="disabled"),
    )
    return study, base_config(method, args)


def study_export(method: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The ``--top-k`` best trials of ``method``'s study, as ``search.export`` writes them."""
    return export_study(load_study(f"quality-{method}", study_storage(workdir)), top_k=args.top_k)


def tuned_export(method: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run (or resume) a study for ``method`` and export its ``--top-k`` best trials."""
    run_study(*study_configs(method, args, workdir), cache_dir=cache_folder(args, workdir), progress=False)
    return study_export(method, args, workdir)


def run_in_parallel(args: argparse.Namespace, workdir: Path, data: DataConfig, methods: list[str]) -> None:
    """Run every study with ``--jobs`` workers, then train every (configuration, seed) run, ``--jobs`` at a time.

    What this leaves in ``workdir`` the sequential pass in :func:`main` reads instead of training.
    """
    cache_dir = cache_folder(args, workdir)
    with worker_pool(args.jobs) as pool:
        wait_all(
            [
                pool.submit(run_study_in_worker, *study_configs(method, args, workdir), None, cache_dir)
                for method in methods
                for _ in range(args.jobs)
            ]
        )
        runs = []
        for method in methods:
            export = study_export(method, args, workdir)
            original = [recipe_candidate(method, data, args.teacher)]
            runs += submit_seed_runs(
                pool, original, args.seeds, out=workdir / method / "recipe", cache_dir=cache_dir
            )
            runs += submit_seed_runs(
                pool, export["candidates"], args.seeds, out=workdir / method / "tuned", cache_dir=cache_dir
            )
        wait_all(runs)


def recipe_candidate(method: str, data: DataConfig, teacher: str) -> dict[str, Any]:
    """The recipe as an export candidate, so it is retrained like a tuned trial."""
    return {
        "trial": f"recipe-{method}",
        "rank": 0,
        "validation_score": None,
        "config": recipe(method, data, teacher).to_dict(),
    }


def _gain(pair: dict[str, Any]) -> float:
    """Points of mean test macro-F1 the tuned config gains over the recipe."""
    return (pair["tuned"]["test"]["macro_f1"]["mean"] - pair["recipe"]["test"]["macro_f1"]["mean"]) * 100


def _row(method: str, pair: dict[str, Any]) -> str:
    recipe_f1, tuned_f1 = pair["recipe"]["test"]["macro_f1"], pair["tuned"]["test"]["macro_f1"]
    return (
        f"{method:<6} {format_mean_ci(recipe_f1):>18} {format_mean_ci(tuned_f1):>18} {_gain(pair):>+7.2f} "
        f"{pair['recipe']['test']['accuracy']['mean']:>11.4f} {pair['tuned']['test']['accuracy']['mean']:>10.4f}"
    )


def _target_lines(results: dict[str, Any]) -> list[str]:
    """The two targets, each with the figures that decide it."""
    tuned = {method: pair["tuned"]["test"]["macro_f1"]["mean"] for method, pair in results.items()}
    gains = {method: _gain(pair) for method, pair in results.items()}
    lines = [
        f"tuned beats recipe by >= 2 points for every method: {all(g >= 2 for g in gains.values())} "
        f"({', '.join(f'{m} {g:+.2f}' for m, g in gains.items())})"
    ]
    students = {m: f1 for m, f1 in tuned.items() if m != "lora"}
    if "lora" in tuned and students:
        best = max(students, key=students.get)
        gap = (students[best] - tuned["lora"]) * 100
        lines.append(
            f"tuned LoRA within 1 point of the best student ({best}): {gap <= 1} (LoRA {-gap:+.2f} points)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated (default: odd,even,lora)"
    )
    parser.add_argument("--trials", type=int, default=20, help="trials of each tuning study")
    parser.add_argument("--seeds", type=int, default=3)
    add_top_k_argument(parser, "--top-k", prefix="for each method, ")
    add_study_arguments(parser)
    add_jobs_argument(parser, "each study's workers, then runs trained at once")
    parser.add_argument("--quick", action="store_true", help="tiny subsets and 2 trials (CI smoke)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, but got {args.top_k}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, but got {args.jobs}")
    if args.quick:
        args.trials, args.seeds = 2, 2
        args.train_size, args.eval_size, args.test_size = 200, 100, 100
    data = DataConfig(
        dataset=args.data,
        **{name: getattr(args, name) for name in SUBSET_FLAGS if getattr(args, name) is not None},
    )
    results: dict[str, Any] = {}
    print(
        f"{'method':<6} {'recipe macro-F1':>18} {'tuned macro-F1':>18} {'gain':>7} {'recipe acc':>11} {'tuned acc':>10}"
    )
    methods = args.methods.split(",")
    with working_folder(args.workdir) as workdir:
        cache_dir = cache_folder(args, workdir)
        if args.jobs > 1:
            run_in_parallel(args, workdir, data, methods)
        for method in methods:
            candidates, winner = retrain_top_candidates(
                tuned_export(method, args, workdir),
                args.seeds,
                top_k=args.top_k,
                out=workdir / method / "tuned",
                cache_dir=cache_dir,
                progress=False,
            )
            results[method] = {
                "recipe": retrain_candidate(
                    recipe_candidate(method, data, args.teacher),
                    args.seeds,
                    out=workdir / method / "recipe",
                    cache_dir=cache_dir,
                    progress=False,
                ),
                "tuned": winner,
                "tuned_candidates": candidates,
            }
            print(_row(method, results[method]), flush=True)
            if args.top_k > 1:
                print(
                    f"       tuned: trial {winner['trial']}, "
                    f"best mean validation of the study's {len(candidates)} best"
                )
    for line in _target_lines(results):
        print(line)
    write_json(
        args.json,
        {"results": results, "args": {k: str(v) for k, v in vars(args).items()}, "machine": machine()},
    )
    return 0


if __name__ == "__main__":
    run_main(main)

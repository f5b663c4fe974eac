"""Pruning savings: the same study with ``--pruner median`` and ``--pruner none``.

Both studies use the same sampler seed and number of trials. The benchmark reports, for each, the
training steps all trials took together, their summed wall time and the best validation macro-F1.
Target: at least 50% fewer steps with the best F1 within 0.5 points. Batch size is searched, and a step
at batch 64 trains on twice the examples of one at batch 16, so the training examples (steps × batch
size) are reported beside the steps as the measure of compute that does not depend on the draws;
``--batch-size B`` fixes it in every arm instead, so the two measures agree.

Both keep toxitune's early stopping, which already ends a trial stuck at the majority class, so a third
study (``none-unstopped``: no pruner, ``--patience 0``) shows what a search spends when nothing cuts a
trial short, as with a plain sweep, and how much of that the pruner and early stopping save together.
``--arms`` picks the studies; ``hyperband`` adds a study with Optuna's Hyperband pruner. Studies
compare only against baselines in the same run. ``--jobs N`` runs N studies at once, each in its own
process (one study per arm and seed, so the figures are those of running them one after another),
then the ``--test-seeds`` retraining N runs at a time.

    python benchmarks/pruning.py --method odd --trials 50 --train-size 1000 --eval-size 500 --json pruning.json

``--pruner-warmup-epochs`` keeps the pruner from judging a trial's first reports, where a slow starter
and a dead one look alike (see benchmarks/RESULTS.md); ``--pruner-patience-epochs`` instead lets it cut
from the first reports but spares a trial whose best is still rising; ``--pruner-startup-trials`` sets
how many trials the median pruner lets finish, in full, before it judges any. The ``none`` studies are
replayed through each pruner setting on the signal they reported (ROC AUC, by default for this F1
study) and on the validation macro-F1, ROC AUC and loss every trial kept.

One sampler seed gives one draw of trials per arm; after the pruner's start-up trials the arms see
different histories and sample different configurations, so their best F1s differ by sampling luck as
well as by pruning. ``--seeds 0,1,2`` repeats every arm per seed: steps are summed over seeds, best F1 is
the mean of each seed's best, and each seed's gap is printed too.

Best validation F1 on a few hundred tweets is a noisy judge of which study found the better
configuration (its standard error here is about two points). ``--test-seeds N`` retrains each study's
best configuration over N training seeds and scores it on the test split, as ``search.train`` does,
so the arms are also compared on test macro-F1, averaged over training seeds and then sampler seeds.
A study's best trial is also the luckiest of its draws on validation; ``--test-top-k K`` retrains its
K best and scores the one with the best mean validation over the training seeds, the configuration
``search.train --top-k K`` would ship.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_data_arguments,
    add_jobs_argument,
    add_study_arguments,
    add_top_k_argument,
    base_config,
    cache_folder,
    machine,
    mean_of,
    run_study_in_worker,
    seed_list,
    submit_seed_runs,
    wait_all,
    worker_pool,
    working_folder,
    write_json,
)
from reports.replay import PRUNER_SETTINGS, replay_signals  # noqa: E402
from search import api  # noqa: E402
from search.api import StudyConfig, TrainConfig  # noqa: E402
from search.export import export_study  # noqa: E402
from search.pruners import MEDIAN_STARTUP_TRIALS  # noqa: E402
from search.study import best_trial, state_counts  # noqa: E402
from search.tracking import WandbSettings  # noqa: E402
from search.train import retrain_top_candidates  # noqa: E402
from studies.presets import search_space  # noqa: E402
from studies.spaces import SearchSpace  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.config import METRICS  # noqa: E402
from trainers.errors import ConfigError  # noqa: E402


@dataclass(frozen=True)
class Arm:
    """One of the compared studies: a pruner, and whether trials may stop early."""

    name: str
    pruner: str
    early_stopping: bool = True


ARMS = {
    arm.name: arm
    for arm in (
        Arm("median", "median"),
        Arm("hyperband", "hyperband"),
        Arm("none", "none"),
        Arm("none-unstopped", "none", early_stopping=False),
    )
}
BASELINES = ("none", "none-unstopped")


def study_location(arm: Arm, seed: int, workdir: Path) -> tuple[str, str]:
    """Name and storage URL of ``arm``'s study with sampler ``seed``."""
    name = f"{arm.name}-seed{seed}"
    return f"bench-{name}", f"sqlite:///{workdir}/{name}.db"


def study_configs(
    arm: Arm, seed: int, args: argparse.Namespace, workdir: Path
) -> tuple[StudyConfig, TrainConfig, SearchSpace]:
    """The study settings, the trials' fixed settings and the space of ``arm``'s study with sampler ``seed``."""
    name, storage = study_location(arm, seed, workdir)
    study = StudyConfig(
        trials=args.trials, name=name, storage=storage, pruner=arm.pruner, seed=seed,
        pruner_warmup_epochs=args.pruner_warmup_epochs, pruner_patience_epochs=args.pruner_patience_epochs,
        pruner_startup_trials=args.pruner_startup_trials, pruner_signal=args.pruner_signal,
        wandb=WandbSettings(mode="disabled"),
    )  # fmt: skip
    settings: dict[str, Any] = {"epochs": args.epochs, "evals_per_epoch": args.evals_per_epoch}
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    if not arm.early_stopping:
        settings["patience"] = 0
    return study, base_config(args.method, args, **settings), search_space(args.method, fixed=settings)


def run_in_parallel(args: argparse.Namespace, workdir: Path, arms: list[str]) -> None:
    """Run every study ``--jobs`` at a time, then train every ``--test-seeds`` run ``--jobs`` at a time.

    What this leaves in ``workdir`` the sequential pass (:func:`run_study`) reads instead of training.
    """
    studies = [(ARMS[name], seed) for name in arms for seed in args.seeds]
    with worker_pool(args.jobs) as pool:
        cache_dir = cache_folder(args, workdir)
        wait_all(
            [
                pool.submit(run_study_in_worker, *study_configs(arm, seed, args, workdir), cache_dir)
                for arm, seed in studies
            ]
        )
        if not args.test_seeds:
            return
        runs = []
        for arm, seed in studies:
            name, storage = study_location(arm, seed, workdir)
            study = optuna.load_study(study_name=name, storage=storage)
            if best_trial(study):
                runs += submit_seed_runs(
                    pool,
                    export_study(study, top_k=args.test_top_k)["candidates"],
                    args.test_seeds,
                    out=workdir / "retrained" / name,
                    cache_dir=cache_folder(args, workdir),
                )
        wait_all(runs)


def run_study(arm: Arm, seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run (or resume) the study of ``arm`` with sampler ``seed``; return its steps, trial time and best value."""
    name, _ = study_location(arm, seed, workdir)
    settings, base, space = study_configs(arm, seed, args, workdir)
    study = api.run_study(settings, base, space=space, cache_dir=cache_folder(args, workdir), progress=False)
    best = best_trial(study)
    counts = state_counts(study)
    test, test_trial = None, None
    if args.test_seeds and best:
        _, winner = retrain_top_candidates(
            export_study(study, top_k=args.test_top_k),
            args.test_seeds,
            top_k=args.test_top_k,
            out=workdir / "retrained" / name,
            cache_dir=cache_folder(args, workdir),
            progress=False,
        )
        test, test_trial = winner["test"]["macro_f1"]["mean"], winner["trial"]
    return {
        "steps": sum(t.user_attrs.get("steps", 0) for t in study.trials),
        "examples": sum(
            t.user_attrs.get("steps", 0) * t.user_attrs["config"]["batch_size"]
            for t in study.trials
            if "config" in t.user_attrs
        ),
        # Summed over trials rather than timed around run_study, so a resumed benchmark still adds up.
        "seconds": round(sum(t.duration.total_seconds() for t in study.trials if t.duration), 1),
        "best_value": best.value if best else None,
        "test_macro_f1": test,
        "test_trial": test_trial,
        "trials": len(study.trials),
        "pruned": counts["pruned"],
        "early_stopped": sum(t.user_attrs.get("status") == "early_stopped" for t in study.trials),
        "failed": counts["collapsed"] + counts["diverged"] + counts["failed"],
    }


def total(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One arm over all seeds: counts, steps and time summed; best value and test score the seeds' means."""
    summed = {key: sum(r[key] for r in per_seed.values()) for key in SUMMED}
    return {
        **summed,
        "seconds": round(summed["seconds"], 1),
        **{key: mean_of([r[key] for r in per_seed.values()]) for key in AVERAGED},
        "seeds": per_seed,
    }


SUMMED = ("steps", "examples", "seconds", "trials", "pruned", "early_stopped", "failed")
AVERAGED = ("best_value", "test_macro_f1")


def compare(cut: dict[str, Any], full: dict[str, Any]) -> tuple[float, float, float]:
    """Shares of ``full``'s training steps and examples that ``cut`` saved, and its best-F1 gain in points."""
    steps, examples = (1 - cut[key] / full[key] if full[key] else 0.0 for key in ("steps", "examples"))
    return steps, examples, ((cut["best_value"] or 0) - (full["best_value"] or 0)) * 100


def retrained_gain(cut: dict[str, Any], full: dict[str, Any]) -> float | None:
    """``cut``'s retrained best configuration's test macro-F1 less ``full``'s, in points, if both were run."""
    if cut["test_macro_f1"] is None or full["test_macro_f1"] is None:
        return None
    return (cut["test_macro_f1"] - full["test_macro_f1"]) * 100


def replay_baseline(
    args: argparse.Namespace, workdir: Path
) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    """The ``none`` studies' trials replayed through each of toxitune's pruner settings, over all seeds,
    at the study's reports an epoch and at each rate that divides it, on the signal its pruner judged and
    on each other signal its trials kept (keyed by signal, then reports an epoch, then setting)."""
    replays = []
    for seed in args.seeds:
        name, storage = study_location(ARMS["none"], seed, workdir)
        study = optuna.load_study(study_name=name, storage=storage)
        replays.append(
            replay_signals(
                study.trials,
                study.direction,
                # Studies from before the pruner could judge another signal reported their metric.
                reported=study.user_attrs.get("pruner_signal", study.user_attrs["metric"]),
                metric=study.user_attrs["metric"],
                epochs=args.epochs,
                evals_per_epoch=args.evals_per_epoch,
            )
        )
    results: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for signal, by_rate in replays[0].items():
        if any(signal not in replay for replay in replays):
            continue
        for rate in by_rate:
            for setting in PRUNER_SETTINGS:
                runs = [replay[signal][rate][setting] for replay in replays]
                steps, full_steps = sum(r.steps for r in runs), sum(r.full_steps for r in runs)
                gaps = [(r.best_value or 0) - (r.full_best_value or 0) for r in runs]
                results.setdefault(signal, {}).setdefault(rate, {})[setting.label] = {
                    "pruned": sum(r.pruned for r in runs),
                    "steps_saved": 1 - steps / full_steps if full_steps else 0.0,
                    "f1_gain_points": 100 * sum(gaps) / len(gaps),
                }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--method", choices=("odd", "even", "lora"), default="lora")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--evals-per-epoch",
        type=int,
        default=2,
        help="reports a trial makes each epoch (the pruner's chances)",
    )
    parser.add_argument(
        "--pruner-warmup-epochs",
        type=float,
        default=0.0,
        help="epochs a trial trains before a pruner may judge it (default: 0)",
    )
    parser.add_argument(
        "--pruner-patience-epochs",
        type=float,
        default=0.0,
        help="epochs a trial's best must stay flat before a pruner may cut it (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="fix every trial's batch size, taking it out of the search space, so steps saved and "
        "examples saved are one measure (default: searched)",
    )
    parser.add_argument(
        "--pruner-startup-trials",
        type=int,
        default=MEDIAN_STARTUP_TRIALS,
        help=f"trials the median pruner lets finish before it judges any (default: {MEDIAN_STARTUP_TRIALS})",
    )
    parser.add_argument(
        "--pruner-signal",
        choices=METRICS,
        help="validation metric the pruner judges (default: search.run's, roc_auc for this macro-F1 study)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=[0],
        help="comma-separated sampler seeds; every arm runs once per seed (default: 0)",
    )
    parser.add_argument(
        "--arms",
        default="median,none,none-unstopped",
        help=f"comma-separated studies to run, from {', '.join(ARMS)} (default: median,none,none-unstopped)",
    )
    parser.add_argument(
        "--test-seeds",
        type=int,
        default=0,
        help="retrain each study's best configuration over N seeds and score it on test (default: 0, off)",
    )
    add_top_k_argument(parser, "--test-top-k", prefix="with --test-seeds, ")
    add_study_arguments(parser)
    add_jobs_argument(parser, "studies run at once, then retraining runs")
    parser.add_argument("--quick", action="store_true", help="a few trials on a small subset (CI smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 6, 2
        args.train_size, args.eval_size = args.train_size or 200, args.eval_size or 100
    if args.test_seeds < 0:
        raise ConfigError(f"--test-seeds must be at least 0, but got {args.test_seeds}")
    if args.test_top_k < 1:
        raise ConfigError(f"--test-top-k must be at least 1, but got {args.test_top_k}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, but got {args.jobs}")
    arms = args.arms.split(",")
    if unknown := sorted(set(arms) - set(ARMS)):
        raise ConfigError(f"unknown --arms {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    with working_folder(args.workdir) as workdir:
        if args.jobs > 1:
            run_in_parallel(args, workdir, arms)
        results = {
            name: total({seed: run_study(ARMS[name], seed, args, workdir) for seed in args.seeds})
            for name in arms
        }
        replays = replay_baseline(args, workdir) if "none" in arms else {}
    print(
        f"{'study':<15} {'seed':>5} {'trials':>6} {'pruned':>6} {'stopped':>7} {'failed':>6} {'steps':>7} "
        f"{'examples':>9} {'trial s':>8} {'best F1':>8} {'test F1':>8}"
    )
    for name, result in results.items():
        rows = (
            [*result["seeds"].items(), ("all", result)] if len(args.seeds) > 1 else [(args.seeds[0], result)]
        )
        for seed, r in rows:
            best, test = ("-" if r[key] is None else f"{r[key]:.4f}" for key in AVERAGED)
            print(
                f"{name:<15} {seed:>5} {r['trials']:>6} {r['pruned']:>6} {r['early_stopped']:>7} {r['failed']:>6} "
                f"{r['steps']:>7} {r['examples']:>9} {r['seconds']:>8} {best:>8} {test:>8}"
            )
    comparisons = {
        (name, baseline): (
            *compare(results[name], results[baseline]),
            retrained_gain(results[name], results[baseline]),
        )
        for name in results
        if name not in BASELINES
        for baseline in BASELINES
        if baseline in results
    }
    for (name, baseline), (saved, examples, gain, on_test) in comparisons.items():
        target = " (target: >=50%, >=-0.5)" if baseline == "none" else ""
        pooled = f"over {len(args.seeds)} seeds, mean " if len(args.seeds) > 1 else ""
        retrained = "" if on_test is None else f"; retrained on test, {pooled}macro-F1 {on_test:+.2f} points"
        print(
            f"{name} against {baseline}: {saved:.0%} fewer steps ({examples:.0%} fewer examples), "
            f"{pooled}best F1 {gain:+.2f} points{target}{retrained}"
        )
        if len(args.seeds) > 1:
            by_seed = [(s, results[name]["seeds"][s], results[baseline]["seeds"][s]) for s in args.seeds]
            print("  by seed: " + ", ".join(f"{s}: {_gaps(cut, full)}" for s, cut, full in by_seed))
    for signal, by_rate in replays.items():
        for rate, by_setting in by_rate.items():
            print(
                f"The none studies' trials replayed through each pruner judging {signal} at {rate} "
                "report(s) an epoch (the same draws, so pruning alone):"
            )
            for label, r in by_setting.items():
                print(
                    f"  {label:<50} {r['pruned']:>3} cut, {r['steps_saved']:.0%} fewer steps, "
                    f"best F1 {r['f1_gain_points']:+.2f} points"
                )
    write_json(
        args.json,
        {
            **results,
            "replay_of_none": {
                signal: {f"{rate} reports/epoch": r for rate, r in by_rate.items()}
                for signal, by_rate in replays.items()
            },
            **{
                f"{name}_vs_{baseline}": {
                    "steps_saved": saved,
                    "examples_saved": examples,
                    "f1_gain_points": gain,
                    "test_f1_gain_points": on_test,
                }
                for (name, baseline), (saved, examples, gain, on_test) in comparisons.items()
            },
            "args": {key: str(value) for key, value in vars(args).items()},
            "machine": machine(),
        },
    )
    return 0


def _gaps(cut: dict[str, Any], full: dict[str, Any]) -> str:
    """``steps saved / best-F1 gain`` of one seed, then the test gain where both were retrained."""
    saved, _, gain = compare(cut, full)
    on_test = retrained_gain(cut, full)
    return f"{saved:.0%} / {gain:+.2f}" + ("" if on_test is None else f" (test {on_test:+.2f})")


if __name__ == "__main__":
    run_main(main)

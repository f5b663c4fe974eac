"""Retrain exported configs over several seeds and crown a winner: ``python -m search.train --config best.yaml``.

Each candidate of the export is trained with seeds ``seed, seed+1, …`` (its own trial seed first) and
evaluated on test once per seed, after training. The winner is the candidate with the best *mean*
validation score, so one lucky seed does not decide. Finished seeds are kept under ``OUT/runs`` and
skipped when the command is rerun after an interruption.

An export of a Pareto front (``search.export --pareto``) is retrained whole and has no winner: the
front is recomputed on the seed means of its metric objectives, beside the architecture's costs. A
trial that was on the front by one lucky seed may drop off it; the report says which did.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.export import check_export, read_document
from search.objectives import COSTS, pareto_front
from trainers.cli import ArgumentParser, run_main
from trainers.config import METRICS, TrainConfig, maximizes
from trainers.settings import require

if TYPE_CHECKING:
    from trainers.loop import TrainResult
    from trainers.task import Task

# Torch, transformers and scipy load in the functions that train, so that --help and a bad export
# answer at once.

SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1")


def mean_ci(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and the half-width of its Student-t confidence interval (``None`` for one value).

    Example:
        >>> mean_ci([0.80, 0.82, 0.84])["ci95"]  # 2.776 * 0.02 / sqrt(3)
        0.0496...
    """
    from scipy import stats

    mean = statistics.fmean(values) if values else math.nan
    half = None
    if len(values) > 1:
        sem = stats.sem(values)
        # scipy gives nan for a zero-width interval, which seeds that all score alike have.
        half = 0.0 if sem == 0 else float(stats.t.interval(confidence, len(values) - 1, scale=sem)[1])
    return {"mean": mean, "ci95": half, "values": values, "n": len(values)}


def retrain_candidate(
    candidate: dict[str, Any],
    seeds: int,
    *,
    out: Path,
    cache_dir: Path,
    progress: bool,
    data_fingerprint: str | None = None,
) -> dict[str, Any]:
    """Train one exported candidate over ``seeds`` seeds; keep its best-validation model on disk.

    Args:
        candidate: One entry of an export's ``candidates``.
        seeds: How many seeds, starting at the candidate's own.
        out: Output folder; finished seeds found under ``out/runs`` are read, not retrained.
        cache_dir: Cache for tokens and teachers.
        progress: Show progress bars.
        data_fingerprint: The study's data fingerprint; a mismatch is reported, since scores then differ.
    """
    from trainers.models import save_classifier
    from trainers.prepare import prepare_task

    config = TrainConfig.from_dict(candidate["config"])

    @functools.cache
    def task() -> Task:
        # Prepared only for a seed that must train: a rerun with every seed stored reads no data.
        prepared = prepare_task(config, cache_dir=cache_dir, progress=progress)
        if data_fingerprint and prepared.splits.fingerprint() != data_fingerprint:
            print(
                f"warning: the data of {config.data.dataset} changed since the study; "
                "scores are not comparable"
            )
        return prepared

    folder = out / "candidates" / f"trial-{candidate['trial']}"
    maximize = maximizes(config.metric)
    runs = []
    for seed in range(config.seed, config.seed + seeds):
        report_path = seed_report_path(out, candidate["trial"], seed)
        seeded = dataclasses.replace(config, seed=seed)
        report = stored_report(report_path, seeded)
        if report is not None:
            runs.append(report)
            continue
        report, result = train_seed(seeded, task(), trial=candidate["trial"], progress=progress)
        score = report["validation"][config.metric] if _succeeded(report) else None
        # A collapsed or diverged seed is never the one shipped, however well it scores.
        previous = [r["validation"][config.metric] for r in runs if _succeeded(r)]
        if score is not None and all(score > p if maximize else score < p for p in previous):
            shutil.rmtree(folder / "model", ignore_errors=True)
            save_classifier(result.model, task().tokenizer, folder / "model")
            (folder / "best_seed.json").write_text(json.dumps({"seed": seed, "validation": score}))
        # Written last: a run interrupted while its model was saved is trained again, not read.
        write_report(report_path, report)
        runs.append(report)
    scored = [r for r in runs if r["validation"]]
    return {
        "trial": candidate["trial"],
        "rank": candidate["rank"],
        "study_score": candidate["validation_score"],
        "seeds": [r["seed"] for r in runs],
        "failed_seeds": [r["seed"] for r in runs if not _succeeded(r)],
        "statuses": [r["status"] for r in runs],
        "validation": mean_ci([r["validation"][config.metric] for r in scored]),
        "validation_means": (
            {name: statistics.fmean(r["validation"][name] for r in scored) for name in METRICS}
            if scored
            else None
        ),
        "exported_objectives": candidate.get("objectives"),
        "test": {name: mean_ci([r["test"][name] for r in scored]) for name in SUMMARY_METRICS},
        # The teacher (or ensemble) the seeds distilled from, scored on validation and test beside them.
        "teacher": runs[0].get("teacher") if runs else None,
        # Seeds trained elsewhere (prepare_seed) leave no model here.
        "model": str(folder / "model") if (folder / "model").is_dir() else None,
        "config": candidate["config"],
    }


def _succeeded(report: dict[str, Any]) -> bool:
    from trainers.loop import FAILURES

    return report["validation"] is not None and report["status"] not in {status.value for status in FAILURES}


def seed_report_path(out: Path, trial: int | str, seed: int) -> Path:
    """Where the report of ``trial`` trained with ``seed`` is kept under ``out``."""
    return out / "runs" / f"trial-{trial}-seed-{seed}.json"


def stored_report(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The report at ``path`` if it was trained with exactly ``config``, else ``None``.

    Another export's trial of the same number must be trained, not read.
    """
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return report if config.matches(report["config"]) else None


def train_seed(
    config: TrainConfig, task: Task, *, trial: int | str, progress: bool
) -> tuple[dict[str, Any], TrainResult]:
    """Train ``config`` (seed included) and score it on test once; print and return its report."""
    from trainers.loop import train
    from trainers.train import run_report

    result = train(config, task, progress=progress)
    report = {"seed": config.seed, **run_report(config, task, result)}
    score = report["validation"][config.metric] if report["validation"] else None
    print(
        f"trial {trial} seed {config.seed}: {report['status']}, validation {config.metric} {_show(score)}, "
        f"test macro-F1 {_show(report['test']['macro_f1'] if report['test'] else None)}"
    )
    return report, result


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def prepare_seed(candidate: dict[str, Any], seed: int, *, out: Path, cache_dir: Path) -> None:
    """Train one seed of ``candidate`` unless ``out`` holds it, keeping only its report.

    :func:`retrain_candidate` then reads it instead of training it; so seeds can be spread over
    processes (one call each) and gathered by one :func:`retrain_candidate` call. No model is kept.
    """
    from trainers.prepare import prepare_task

    config = dataclasses.replace(TrainConfig.from_dict(candidate["config"]), seed=seed)
    report_path = seed_report_path(out, candidate["trial"], seed)
    if stored_report(report_path, config) is None:
        task = prepare_task(config, cache_dir=cache_dir, progress=False)
        report, _ = train_seed(config, task, trial=candidate["trial"], progress=False)
        write_report(report_path, report)


def pick_winner(results: list[dict[str, Any]], *, maximize: bool) -> dict[str, Any]:
    """The candidate with the fewest failed seeds, then the best mean validation score."""
    sign = 1 if maximize else -1
    return min(
        results,
        key=lambda r: (
            len(r["failed_seeds"]),
            -sign * r["validation"]["mean"] if r["validation"]["n"] else math.inf,
        ),
    )


def retrain_top_candidates(
    document: dict[str, Any], seeds: int, *, top_k: int, out: Path, cache_dir: Path, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Retrain an export's ``top_k`` best candidates over ``seeds`` seeds each (:func:`retrain_candidate`).

    Returns:
        Every candidate's results, in rank order, and the winner among them (:func:`pick_winner`).
    """
    results = [
        retrain_candidate(
            candidate,
            seeds,
            out=out,
            cache_dir=cache_dir,
            progress=progress,
            data_fingerprint=(document.get("data") or {}).get("fingerprint"),
        )
        for candidate in document["candidates"][:top_k]
    ]
    maximize = document.get("direction", "maximize") == "maximize"
    return results, pick_winner(results, maximize=maximize)


def refront(results: list[dict[str, Any]], objectives: list[str], directions: list[str]) -> None:
    """Recompute the Pareto front of retrained ``results`` in place, on their seed means.

    Each result gains ``objectives`` (the seed mean of each validation metric, the exported figure of
    each cost, which belongs to the architecture) and ``pareto``; one without a scored seed is off it.
    """
    scored = []
    for result in results:
        report_means = result["validation_means"]
        result["objectives"] = (
            {
                name: result["exported_objectives"][name] if name in COSTS else report_means[name]
                for name in objectives
            }
            if report_means
            else None
        )
        result["pareto"] = False
        if result["objectives"] is not None:
            scored.append(result)
    on_front = pareto_front([list(r["objectives"].values()) for r in scored], directions)
    for result, on in zip(scored, on_front, strict=True):
        result["pareto"] = on


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.train", description="Retrain exported configs over several seeds."
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="export written by python -m search.export"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per candidate (default: 3)")
    parser.add_argument(
        "--top-k",
        type=int,
        help="retrain the K best candidates of the export (default: 1; a Pareto export is retrained whole)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for metrics.json and model/")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache for tokens and teachers (default: ~/.cache/toxitune)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def retrain(
    export: dict[str, Any] | Path | str,
    *,
    out: Path,
    seeds: int = 3,
    top_k: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrain an export's ``top_k`` best candidates over ``seeds`` seeds each and ship the winner.

    Writes ``out/metrics.json`` (the returned report) and ``out/model``, the winner's best-validation
    seed that neither collapsed nor diverged. Finished seeds under ``out`` are read, not retrained.
    An export of a Pareto front is retrained whole, and its front recomputed on the seed means
    (:func:`refront`); it ships no single model, each candidate's is under ``out/candidates``.

    Args:
        export: An export document (:func:`search.export.export_best`) or the file holding one.
        out: Output folder.
        seeds: Seeds per candidate, starting at each candidate's own.
        top_k: How many of the export's candidates to retrain (default 1); refused for a front.
        cache_dir: Cache for tokens and teachers (default: ``~/.cache/toxitune``).
        progress: Show progress bars.

    Returns:
        ``study``, ``metric``, ``winner`` (its trial number) and each candidate's results; for a
        front, ``objectives``, ``front`` and ``dropped`` (trial numbers) instead of a winner.

    Raises:
        ConfigError: A bad count, or an export that is incomplete or holds fewer candidates.
    """
    require(seeds >= 1, f"seeds (--seeds) must be at least 1, but got {seeds}")
    document = check_export(export, "the export") if isinstance(export, dict) else read_document(Path(export))
    candidates = document["candidates"]
    front = "objectives" in document
    require(
        not (front and top_k is not None),
        "the export is a Pareto front, retrained whole to recompute it; drop --top-k",
    )
    top_k = len(candidates) if front else 1 if top_k is None else top_k
    require(top_k >= 1, f"top_k (--top-k) must be at least 1, but got {top_k}")
    require(
        top_k <= len(candidates),
        f"top_k (--top-k) is {top_k} but the export holds {len(candidates)} candidates; export with --top-k",
    )
    from trainers.cache import default_cache_dir

    results, winner = retrain_top_candidates(
        document, seeds, top_k=top_k, out=out, cache_dir=cache_dir or default_cache_dir(), progress=progress
    )
    if front:
        refront(results, document["objectives"], document["directions"])
        report = {
            "study": document["study"],
            "metric": document["metric"],
            "objectives": document["objectives"],
            "winner": None,
            "front": [r["trial"] for r in results if r["pareto"]],
            "dropped": [r["trial"] for r in results if not r["pareto"]],
            "candidates": results,
        }
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        return report
    shutil.rmtree(out / "model", ignore_errors=True)
    if winner["model"]:
        shutil.copytree(winner["model"], out / "model")
    report = {
        "study": document["study"],
        "metric": document["metric"],
        "winner": winner["trial"],
        "candidates": results,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = retrain(
        args.config,
        out=args.out,
        seeds=args.seeds,
        top_k=args.top_k,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    if report["winner"] is None:
        return _print_front(report)
    winner = next(result for result in report["candidates"] if result["trial"] == report["winner"])
    for result in report["candidates"]:
        val, test = result["validation"], result["test"]["macro_f1"]
        mark = "*" if result is winner else " "
        print(
            f"{mark} trial {result['trial']}: validation {report['metric']} {format_mean_ci(val)}, "
            f"test macro-F1 {format_mean_ci(test)}, failed seeds {result['failed_seeds'] or 'none'}"
        )
    if winner["teacher"]:
        from trainers.prepare import describe_teacher

        print(f"  {describe_teacher(winner['teacher'], 'macro_f1')}")
    print(f"winner: trial {winner['trial']}; wrote {args.out}")
    if winner["failed_seeds"]:
        failed = ", ".join(
            f"seed {seed} {status}"
            for seed, status in zip(winner["seeds"], winner["statuses"], strict=True)
            if seed in winner["failed_seeds"]
        )
        shipped = "its model is its best seed that trained" if winner["model"] else "no model was written"
        print(f"error: the winner, trial {winner['trial']}, failed on {failed}; {shipped}", file=sys.stderr)
        return 1
    return 0


def _print_front(report: dict[str, Any]) -> int:
    """Print each retrained candidate of a front, and which dropped off it."""
    for result in report["candidates"]:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in (result["objectives"] or {}).items())
        mark = "*" if result["pareto"] else " "
        print(
            f"{mark} trial {result['trial']}: {shown or 'no scored seed'}; validation {report['metric']} "
            f"{format_mean_ci(result['validation'])}, failed seeds {result['failed_seeds'] or 'none'}"
        )
    print(f"front after retraining: trials {report['front']}")
    if report["dropped"]:
        print(
            f"dropped off the front on the seed means: trials {report['dropped']}; the study saw one seed "
            "of each, and a lucky seed can put a trial on the front"
        )
    return 0


def format_mean_ci(summary: dict[str, Any]) -> str:
    """``mean ± ci95`` of a :func:`mean_ci` summary, ``-`` when it holds no value."""
    if not summary["n"]:
        return "-"
    return f"{summary['mean']:.4f}" + (f" ± {summary['ci95']:.4f}" if summary["ci95"] is not None else "")


if __name__ == "__main__":
    run_main(main)

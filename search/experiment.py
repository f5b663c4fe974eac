"""The original study in one command: every method searched, retrained over seeds, beside its recipe.

``python -m search.experiment --preset tweeteval --methods odd,even,lora --trials 12 --seeds 3
--baseline recipe --out runs/tweeteval`` runs, for each method, its study (all in ``OUT/studies.db``),
exports its ``--top-k`` best trials, retrains them over ``--seeds`` seeds (test read once per seed,
after training), retrains the original recipe over the same seeds with ``--baseline recipe``, and
finally writes the comparison report (``reports.compare``) to ``OUT/report``.

Every stage keeps its results under ``OUT``, so rerunning the same command after a crash or Ctrl-C
redoes only what is missing; ``OUT/experiment.json`` records the settings, and a rerun with other
settings is refused.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from search.config import StudyConfig
from studies.presets import Preset, available_presets, load_preset, search_space
from trainers.cli import ArgumentParser, add_config_arguments, config_overrides, merge, run_main
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.settings import described, difference, require, setting_name, setting_paths

SEARCH_METHODS = ("odd", "even", "lora")
Baseline = Literal["none", "recipe"]
RECORD = "experiment.json"


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Which methods an experiment compares, and how hard it searches and retrains each."""

    methods: tuple[str, ...] = field(
        default=SEARCH_METHODS, metadata=described("comma-separated methods to compare")
    )
    trials: int = field(default=20, metadata=described("finished trials of each method's study"))
    seeds: int = field(default=3, metadata=described("seeds each shipped candidate is retrained with"))
    top_k: int = field(
        default=1, metadata=described("best trials of each study retrained; the best mean wins")
    )
    baseline: Baseline = field(
        default="none",
        metadata=described("also retrain the original study's recipe of each method, as a reference row"),
    )

    def __post_init__(self) -> None:
        def name(path: str) -> str:
            return setting_name(ExperimentConfig, path)

        unknown = [method for method in self.methods if method not in SEARCH_METHODS]
        require(not unknown, f"{name('methods')} holds {unknown}; choose from {', '.join(SEARCH_METHODS)}")
        require(len(self.methods) > 0, f"{name('methods')} must name at least one method")
        require(len(set(self.methods)) == len(self.methods), f"{name('methods')} names a method twice")
        for path in ("trials", "seeds", "top_k"):
            value = getattr(self, path)
            require(value >= 1, f"{name(path)} must be at least 1, but got {value}")
        require(
            self.baseline in get_args(Baseline),
            f"{name('baseline')} must be one of {get_args(Baseline)}, but got {self.baseline!r}",
        )


def run_experiment(
    config: ExperimentConfig,
    *,
    out: Path,
    preset: Preset | None = None,
    settings: dict[str, Any] | None = None,
    study: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Search, export and retrain every method of ``config``, then write the report to ``out/report``.

    Args:
        config: The methods and how much to search and retrain each.
        out: The experiment's folder: studies, exports, retrained runs and the report.
        preset: Where the data, teacher and search ranges come from.
        settings: Training settings fixed for every trial of every method (they leave the search
            space), as :meth:`TrainConfig.to_dict` names them.
        study: Study settings for every method's study (sampler, pruner, W&B), as
            :class:`StudyConfig` names them; its trials, name and storage are the experiment's.
        cache_dir: Cache for tokens and teachers (default: ``~/.cache/toxitune``).
        progress: Show progress bars, not only each stage's lines.

    Returns:
        Per method, what its stages produced: ``status`` and the retrain reports.

    Raises:
        ConfigError: ``out`` holds an experiment with other settings.
    """
    from reports.compare import write_report

    settings, study = settings or {}, study or {}
    record = json.loads(
        json.dumps(
            {
                "experiment": dataclasses.asdict(config),
                "preset": preset.name if preset else None,
                "settings": settings,
                "study": study,
            },
            default=str,
        )
    )
    _check_record(out, record)
    storage = f"sqlite:///{out / 'studies.db'}"
    # Every method's settings are checked before anything runs.
    plans = [
        (
            method,
            training_config(method, preset, settings),
            StudyConfig.from_dict(
                {
                    **study,
                    "trials": config.trials,
                    "name": f"{method}-{preset.name if preset else 'custom'}",
                    "storage": storage,
                }
            ),
        )
        for method in config.methods
    ]
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    before = report_sources(out)
    try:
        results = _run(
            config,
            plans,
            out=out,
            preset=preset,
            settings=settings,
            record=record,
            cache_dir=cache_dir,
            progress=progress,
        )
    except BaseException:
        if created and not any(out.iterdir()):  # a first stage that failed leaves nothing behind
            out.rmdir()
        raise
    index = out / "report" / "index.html"
    if index.exists() and report_sources(out) == before:
        print(f"[report] up to date: {index}", flush=True)
    else:
        print("[report] efficiency, differences and figures", flush=True)
        write_report(out)
    return results


def report_sources(out: Path) -> dict[str, Any]:
    """What the report is drawn from: each stored seed run's time and each study's trial count.

    A rerun that changed neither leaves the report as it is.
    """
    import optuna

    from search.storage import open_storage

    runs = {str(path): path.stat().st_mtime_ns for path in sorted(out.glob("*/*/runs/*.json"))}
    studies = {}
    if (out / "studies.db").exists():
        storage = open_storage(f"sqlite:///{out / 'studies.db'}", create=False)
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        studies = {summary.study_name: summary.n_trials for summary in summaries}
    return {"runs": runs, "studies": studies}


def _run(
    config: ExperimentConfig,
    plans: list[tuple[str, TrainConfig, StudyConfig]],
    *,
    out: Path,
    preset: Preset | None,
    settings: dict[str, Any],
    record: dict[str, Any],
    cache_dir: Path | None,
    progress: bool,
) -> dict[str, Any]:
    from search.api import export_best, retrain, run_study
    from search.study import best_trial
    from search.urls import redact

    results: dict[str, Any] = {}
    for number, (method, base, study) in enumerate(plans, start=1):
        stage = f"[{number}/{len(plans)} {method}]"
        print(f"{stage} study: {config.trials} trials in {redact(study.storage)}", flush=True)
        space = search_space(method, preset, fixed=setting_paths(settings))
        searched = run_study(study, base, space=space, preset=preset, cache_dir=cache_dir, progress=progress)
        (out / RECORD).write_text(json.dumps(record, indent=2))  # once a study holds something to resume
        folder = out / method
        if best_trial(searched) is None:
            print(f"{stage} no trial completed: nothing to retrain", flush=True)
            results[method] = {"status": "no completed trial"}
            continue
        print(f"{stage} export and retrain the {config.top_k} best over {config.seeds} seeds", flush=True)
        export = export_best(study.name, study.storage, top_k=config.top_k, out=folder / "best.yaml")
        common = {"seeds": config.seeds, "cache_dir": cache_dir, "progress": progress}
        results[method] = {
            "status": "ok",
            "tuned": retrain(export, out=folder / "tuned", top_k=config.top_k, **common),
        }
        if config.baseline == "recipe":
            print(f"{stage} retrain the original recipe over {config.seeds} seeds", flush=True)
            results[method]["recipe"] = retrain(recipe_export(method, base), out=folder / "recipe", **common)
    return results


def training_config(method: str, preset: Preset | None, settings: dict[str, Any]) -> TrainConfig:
    """``method``'s training settings: its defaults, then the preset's, then ``settings``."""
    values = merge(TrainConfig(method=method).to_dict(), preset.config if preset else {})
    return TrainConfig.from_dict(merge(values, {**settings, "method": method}))


def recipe_export(method: str, base: TrainConfig) -> dict[str, Any]:
    """The original study's recipe on ``base``'s data and teacher, as an export ``retrain`` reads."""
    from studies.recipes import recipe

    config = recipe(method, base.data, base.teacher.name)
    candidate = {"rank": 1, "trial": f"recipe-{method}", "validation_score": None, "config": config.to_dict()}
    return {
        "toxitune_export": 1,
        "study": f"recipe-{method}",
        "metric": config.metric,
        "candidates": [candidate],
    }


def _check_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse an ``out`` that holds another experiment: one with other settings."""
    path = out / RECORD
    if path.exists() and (stored := json.loads(path.read_text())) != record:
        raise ConfigError(
            f"{out} holds an experiment with other settings ({difference(stored, record)}); "
            "rerun it with the same settings or choose another --out"
        )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.experiment",
        description="Compare compression methods: search each, retrain the best over seeds, write a report.",
    )
    parser.add_argument("--preset", help=f"study preset: {', '.join(available_presets())}, or a .toml file")
    parser.add_argument("--out", type=Path, required=True, help="the experiment's folder")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache for tokens and teachers (default: ~/.cache/toxitune)"
    )
    parser.add_argument("--no-progress", action="store_true", help="print stages and finished trials only")
    add_config_arguments(
        parser.add_argument_group("experiment settings"), ExperimentConfig, namespace="experiment."
    )
    add_config_arguments(
        parser.add_argument_group("study settings, for every method's study"),
        StudyConfig,
        exclude=("trials", "name", "storage"),
        namespace="study.",
    )
    add_config_arguments(
        parser.add_argument_group("training settings (fixed for every trial of every method)"),
        exclude=("method", "seed"),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    experiment = ExperimentConfig(**config_overrides(args, ExperimentConfig, namespace="experiment."))
    preset = load_preset(args.preset) if args.preset else None
    study = merge(preset.study if preset else {}, config_overrides(args, StudyConfig, namespace="study."))
    results = run_experiment(
        experiment,
        out=args.out,
        preset=preset,
        settings=config_overrides(args),
        study=study,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    print(f"report: {args.out / 'report' / 'index.html'}")
    failed = [method for method, result in results.items() if _failed(result)]
    if failed:
        print(
            f"error: no model of {', '.join(failed)} trained without collapsing; see the report",
            file=sys.stderr,
        )
        return 1
    return 0


def _failed(result: dict[str, Any]) -> bool:
    if result["status"] != "ok":
        return True
    tuned = result["tuned"]
    winner = next(candidate for candidate in tuned["candidates"] if candidate["trial"] == tuned["winner"])
    return len(winner["failed_seeds"]) == len(winner["seeds"])


if __name__ == "__main__":
    run_main(main)

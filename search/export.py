"""Export a study's best trials as self-contained configs: ``python -m search.export --study NAME --out best.yaml``.

A multi-objective study has no best trials but a Pareto front: ``--pareto`` exports every trial on it,
ranked by the study's metric, each with its objective values.

The file holds, per exported trial, every resolved training setting its method uses (not only the
tuned ones; see :meth:`~trainers.config.TrainConfig.applicable_dict`), the data source with label
names and fingerprint, the teacher, the validation score, trial number and W&B run, plus package
versions and the git commit, so ``python -m search.train --config`` can reproduce it anywhere.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from search.storage import open_storage
from search.study import pareto_trials
from search.urls import DEFAULT_STORAGE, redact
from trainers.cli import ArgumentParser, run_main
from trainers.config import maximizes
from trainers.errors import ConfigError, ToxituneError

EXPORT_VERSION = 1
CANDIDATE_FIELDS = ("rank", "trial", "validation_score", "config")
# The settings an exported config must state: those a default would silently replace with another run.
REQUIRED_SETTINGS = ("method", "lr", "epochs", "batch_size", "seed", "metric", "data.dataset", "teacher.name")
PACKAGES = ("toxitune", "torch", "transformers", "peft", "accelerate", "optuna", "datasets", "scikit-learn")


def load_study(name: str, storage: str) -> optuna.Study:
    """The stored study ``name``; reading it creates nothing, not even a missing database file.

    Raises:
        ToxituneError: No study of that name in ``storage``, or no storage there.
    """
    backend = open_storage(storage, create=False)
    names = [
        summary.study_name for summary in optuna.get_all_study_summaries(backend, include_best_trial=False)
    ]
    if name not in names:
        raise ToxituneError(f"no study {name!r} in {redact(storage)}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=name, storage=backend)


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials, best first (ties keep trial order)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda t: (-t.value if maximize else t.value, t.number))


def export_study(
    study: optuna.Study, *, top_k: int | None = None, pareto: bool = False, storage: str | None = None
) -> dict[str, Any]:
    """The export document of ``study``'s ``top_k`` best trials (default 1), or of its Pareto front.

    Args:
        study: The stored study.
        top_k: How many of the best trials to export; refused for a multi-objective study.
        pareto: Export every trial on the Pareto front instead, best metric first.
        storage: Recorded without its password.

    Raises:
        ConfigError: ``top_k`` below 1, or given for a multi-objective study or with ``pareto``.
        ToxituneError: The study has no completed trial.
    """
    multi_objective = len(study.directions) > 1
    if pareto and top_k is not None:
        raise ConfigError("--top-k and --pareto choose the trials two ways; pass one of them")
    if multi_objective and not pareto:
        given = f"--top-k {top_k}" if top_k is not None else "a best trial"
        raise ConfigError(
            f"study {study.study_name!r} has several objectives, so {given} means nothing there; "
            "pass --pareto to export its Pareto front"
        )
    top_k = 1 if top_k is None else top_k
    if top_k < 1:
        raise ConfigError(f"top_k (--top-k) must be at least 1, but got {top_k}")
    chosen = _front_by_metric(study) if pareto else ranked_trials(study)[:top_k]
    if not chosen:
        raise ToxituneError(f"study {study.study_name!r} has no completed trial yet; run more trials first")
    if any("config" not in trial.user_attrs for trial in chosen):
        raise ToxituneError(
            f"study {study.study_name!r} was not created by python -m search.run: its trials hold no "
            "toxitune config to export"
        )
    attrs = study.user_attrs
    objectives = attrs.get("objectives") or [attrs.get("metric")]
    return {
        "toxitune_export": EXPORT_VERSION,
        "study": study.study_name,
        "storage": redact(storage) if storage is not None else None,
        "method": attrs.get("method"),
        "metric": attrs.get("metric"),
        "direction": study.directions[0].name.lower() if not multi_objective else None,
        **(
            {
                "objectives": objectives,
                "directions": [d.name.lower() for d in study.directions],
                "latency_protocol": attrs.get("latency_protocol"),
            }
            if pareto
            else {}
        ),
        "data": attrs.get("data"),
        # The sampler and pruner settings the study was created with (search.config.StudyConfig).
        "study_config": attrs.get("study_config"),
        "candidates": [
            _candidate(trial, rank, objectives if pareto else None)
            for rank, trial in enumerate(chosen, start=1)
        ],
        "environment": environment(),
    }


def _front_by_metric(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto-optimal trials, best validation metric first."""
    from search.study import metric_value

    metric = study.user_attrs.get("metric", "macro_f1")
    sign = -1 if maximizes(metric) else 1
    return sorted(pareto_trials(study), key=lambda t: (sign * metric_value(t, metric), t.number))


def _candidate(trial: optuna.trial.FrozenTrial, rank: int, objectives: list[str] | None) -> dict[str, Any]:
    config = trial.user_attrs["config"]
    front = {"objectives": dict(zip(objectives, trial.values, strict=True))} if objectives else {}
    return {
        "rank": rank,
        "trial": trial.number,
        "validation_score": trial.user_attrs.get("value") if objectives else trial.value,
        **front,
        "best_epoch": trial.user_attrs.get("best_epoch"),
        "wandb_run": trial.user_attrs.get("wandb_run"),
        "teacher": config["teacher"]["name"],
        "params": trial.params,
        "config": config,
    }


def environment() -> dict[str, Any]:
    """Python and package versions, and the git commit of the toxitune checkout if there is one."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "packages": versions, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def write_document(document: dict[str, Any], path: Path) -> None:
    """Write YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    elif path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2))
    else:
        raise ConfigError(f"--out must end in .yaml, .yml or .json, but got {path.name!r}")


def read_document(path: Path) -> dict[str, Any]:
    """Read an export written by :func:`write_document`.

    Raises:
        ConfigError: The file is missing or is not a toxitune export.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; write one with python -m search.export")
    try:
        document = (
            json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        )
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML or JSON ({str(error).splitlines()[0]})") from error
    if not isinstance(document, dict) or document.get("toxitune_export") != EXPORT_VERSION:
        raise ConfigError(
            f"{path}: not a toxitune export (version {EXPORT_VERSION}); write one with python -m search.export"
        )
    return check_export(document, str(path))


def check_export(document: dict[str, Any], path: str) -> dict[str, Any]:
    """``document``, once it is known to hold what a retrain reads.

    Raises:
        ConfigError: What a hand-edited or truncated export lacks, named after ``path``, where it came from.
    """
    advice = "write it again with python -m search.export"
    missing = [key for key in ("study", "metric") if key not in document]
    if missing:
        raise ConfigError(f"{path}: no {' or '.join(missing)} field; {advice}")
    candidates = document.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise ConfigError(f"{path}: 'candidates' must be a non-empty list of exported trials; {advice}")
    for position, candidate in enumerate(candidates, start=1):
        where = f"{path}: candidate {position}"
        if not isinstance(candidate, dict):
            raise ConfigError(f"{where} must be a table with {', '.join(CANDIDATE_FIELDS)}; {advice}")
        if missing := [key for key in CANDIDATE_FIELDS if key not in candidate]:
            raise ConfigError(f"{where} has no {', '.join(missing)}; {advice}")
        config = candidate["config"]
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: config must be a table of settings, but got {config!r}")
        # A retrain must run what the study ran: a default in place of a missing learning rate or
        # dataset would train something else under the trial's name.
        if missing := [name for name in REQUIRED_SETTINGS if _setting(config, name) is None]:
            raise ConfigError(
                f"{where}: config has no {', '.join(missing)}; toxitune fills in no defaults here"
            )
    return document


def _setting(config: dict[str, Any], path: str) -> Any:
    value: Any = config
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def export_pareto(study: str, storage: str = DEFAULT_STORAGE, *, out: Path | None = None) -> dict[str, Any]:
    """The export document of every Pareto-optimal trial of stored study ``study``, also written to ``out``.

    Raises:
        ToxituneError: No such study, no completed trial, or a study toxitune did not create.
    """
    document = export_study(load_study(study, storage), pareto=True, storage=storage)
    if out is not None:
        write_document(document, out)
    return document


def export_best(
    study: str, storage: str = DEFAULT_STORAGE, *, top_k: int | None = None, out: Path | None = None
) -> dict[str, Any]:
    """The export document of stored study ``study``'s ``top_k`` best trials, also written to ``out``.

    Args:
        study: The study's name.
        storage: Its storage URL; a missing database file is an error, never created.
        top_k: How many of the best completed trials to export (default 1); a multi-objective study
            refuses it (see :func:`export_pareto`).
        out: A ``.yaml``, ``.yml`` or ``.json`` file to write, if any.

    Raises:
        ToxituneError: No such study, no completed trial, or a study toxitune did not create.
    """
    document = export_study(load_study(study, storage), top_k=top_k, storage=storage)
    if out is not None:
        write_document(document, out)
    return document


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.export", description="Export a study's best trials as configs."
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})"
    )
    parser.add_argument("--out", type=Path, required=True, help="output file, .yaml or .json")
    parser.add_argument("--top-k", type=int, help="export the K best trials (default: 1)")
    parser.add_argument(
        "--pareto",
        action="store_true",
        help="export every trial on the Pareto front (a multi-objective study's only export)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    document = export_study(
        load_study(args.study, args.storage), top_k=args.top_k, pareto=args.pareto, storage=args.storage
    )
    write_document(document, args.out)
    for candidate in document["candidates"]:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in candidate.get("objectives", {}).items())
        print(
            f"#{candidate['rank']}: trial {candidate['trial']}, validation {document['metric']} "
            f"{candidate['validation_score']:.4f}" + (f" ({shown})" if shown else "")
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)

"""Tables and plots of a stored study: ``python -m reports.study --study NAME --out reports/NAME``.

Writes ``trials.csv`` (one row per trial: state, value, best epoch, steps, params), ``summary.md``
(outcomes, best trial, compute spent on each outcome, parameter importances), and three plots:
``history.png`` (value per trial and the best so far), ``curves.png`` (validation metric per epoch,
pruned trials dashed) and ``importance.png``. A multi-objective study's summary lists its Pareto
front, and ``pareto.png`` draws it (Optuna's ``plot_pareto_front``); its history and importances are
of its metric. It reads storage only; it never trains.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from reports.replay import replay_report_rates  # noqa: E402
from search.export import load_study  # noqa: E402
from search.pruners import MEDIAN_STARTUP_TRIALS  # noqa: E402
from search.study import best_trial, metric_value, pareto_trials, trial_rows, trial_state  # noqa: E402
from search.urls import DEFAULT_STORAGE  # noqa: E402
from studies.spaces import readable_params  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.config import maximizes  # noqa: E402

# Below this many completed trials, fANOVA's ranking moves with each new trial: in the H200 studies
# (RESULTS.md), 9 and 11 completed trials of the same draws ranked different parameters first.
FEW_TRIALS_FOR_IMPORTANCE = 20

STATE_COLOURS = {
    "complete": "tab:blue",
    "pruned": "tab:grey",
    "collapsed": "tab:red",
    "diverged": "tab:purple",
    "failed": "black",
}


def readable_study(study: optuna.Study) -> optuna.Study | None:
    """An in-memory copy of ``study``'s completed trials with readable parameters (the loss weights, not
    the simplex draws behind them) valued by the study's metric, or ``None`` until completed trials
    differ in it."""
    metric = study.user_attrs.get("metric", "macro_f1")
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [metric_value(trial, metric) for trial in completed]
    if len(set(values)) < 2:
        return None  # with one value among completed trials, every parameter looks equally (un)important
    readable = optuna.create_study(direction="maximize" if maximizes(metric) else "minimize")
    for trial, value in zip(completed, values, strict=True):
        params = readable_params(trial.params, trial.user_attrs)
        # A weight is no sampled parameter, so it has no distribution of its own; each lies in [0, 1].
        distributions = {name: trial.distributions.get(name, FloatDistribution(0.0, 1.0)) for name in params}
        readable.add_trial(create_trial(value=value, params=params, distributions=distributions))
    return readable


def importances(readable: optuna.Study | None) -> dict[str, float]:
    """Optuna's fANOVA importances on :func:`readable_study`'s trials; empty where it has none."""
    if readable is None:
        return {}
    try:
        return optuna.importance.get_param_importances(readable, evaluator=_evaluator())
    except (RuntimeError, ValueError):  # e.g. no parameter varied across completed trials
        return {}


def _evaluator() -> optuna.importance.FanovaImportanceEvaluator:
    # Seeded, so the table and the plot, each computed on its own, agree.
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def summary_markdown(study: optuna.Study, rows: list[dict[str, Any]], weights: dict[str, float]) -> str:
    """A short Markdown report: outcomes and the compute each took, the best trial, importances."""
    counts = Counter(row["state"] for row in rows)
    steps = Counter()
    for row in rows:
        steps[row["state"]] += row["steps"] or 0
    total = sum(steps.values()) or 1
    metric = study.user_attrs.get("metric", "value")
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"Method `{study.user_attrs.get('method')}`, metric `{metric}`.",
        "",
        *_settings_lines(study.user_attrs.get("study_config")),
    ]
    lines += ["| outcome | trials | training steps | share of steps |", "|---|---:|---:|---:|"]
    for state in STATE_COLOURS:
        if counts[state]:
            lines.append(f"| {state} | {counts[state]} | {steps[state]} | {steps[state] / total:.0%} |")
    lines += _front_lines(study)
    best = best_trial(study)
    if best is not None:
        lines += ["", f"**Best:** trial {best.number}, validation {metric} {best.value:.4f} "
                  f"(best epoch {best.user_attrs.get('best_epoch')}).", "", "| parameter | value |", "|---|---|"]  # fmt: skip
        params = readable_params(best.params, best.user_attrs)
        lines += [f"| {name} | {_show(value)} |" for name, value in params.items()]
    if weights:
        completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        lines += ["", "| parameter | importance |", "|---|---:|"]
        lines += [f"| {name} | {weight:.3f} |" for name, weight in weights.items()]
        if completed < FEW_TRIALS_FOR_IMPORTANCE:
            lines += ["", f"Importances from {completed} completed trials: a hint, not a ranking; with fewer "
                      f"than {FEW_TRIALS_FOR_IMPORTANCE} they shift as trials are added."]  # fmt: skip
    return "\n".join(lines + pruning_replay_markdown(study)) + "\n"


def _front_lines(study: optuna.Study) -> list[str]:
    """A multi-objective study's Pareto front: each trial's objectives and shape; empty for one objective."""
    if len(study.directions) < 2:
        return []
    objectives = study.user_attrs.get("objectives") or [
        f"objective {i}" for i in range(len(study.directions))
    ]
    front = pareto_trials(study)
    lines = ["", f"**Pareto front** of {', '.join(objectives)}: {len(front)} trials.", ""]
    lines += [f"| trial | {' | '.join(objectives)} | method | student layers |",
              "|---:|" + "---:|" * len(objectives) + "---|---|"]  # fmt: skip
    for trial in front:
        config = trial.user_attrs.get("config", {})
        layers = trial.user_attrs.get("student_layers")
        lines.append(
            f"| {trial.number} | {' | '.join(_show(v) for v in trial.values)} | {config.get('method', '-')} "
            f"| {layers if layers is not None else 'all (full depth)'} |"
        )
    if protocol := study.user_attrs.get("latency_protocol"):
        lines += ["", "Latency: " + ", ".join(f"{key} {value}" for key, value in protocol.items()) + "."]
    return lines


def _settings_lines(config: dict[str, Any] | None) -> list[str]:
    """The sampler and pruner settings the study was created with, as ``search.run`` recorded them."""
    if not config:  # studies from before they were recorded
        return []
    pruner = config["pruner"]
    if pruner != "none":
        pruner += (
            f" judging {config['pruner_signal']} (warm-up {config['pruner_warmup_epochs']:g} epochs, patience "
            f"{config['pruner_patience_epochs']:g} epochs, {config['pruner_startup_trials']} start-up trials)"
        )
    return [f"Sampler {config['sampler']} (seed {config['seed']}), pruner {pruner}.", ""]


def pruning_replay_markdown(study: optuna.Study) -> list[str]:
    """For a study no pruner cut: what each pruner setting would have saved on its trials (see
    :mod:`reports.replay`). Empty when a pruner acted (its trials lack later reports) or before the
    median pruner's five start-up trials have finished."""
    trials = study.get_trials(deepcopy=False)
    base = study.user_attrs.get("base_config") or {}
    finished = [t for t in trials if t.state.is_finished()]
    # Studies from before evals_per_epoch existed cannot say how many reports an epoch holds; a
    # multi-objective study reports nothing a pruner could judge.
    if len(study.directions) > 1 or "evals_per_epoch" not in base or len(finished) <= MEDIAN_STARTUP_TRIALS:
        return []
    if any(trial_state(t) == "pruned" for t in trials):
        return []
    by_rate = replay_report_rates(
        trials, study.direction, epochs=base["epochs"], evals_per_epoch=base["evals_per_epoch"]
    )
    lines = [
        "",
        "## What a pruner would have saved",
        "",
        "No trial of this study was pruned. Its trials, replayed in order through each pruner: the same",
        "configurations, so the difference is pruning alone (pass `--pruner`, `--pruner-warmup-epochs`,",
        "`--pruner-patience-epochs` and `--pruner-startup-trials` to `search.run`). Fewer reports an epoch",
        "than the study made are its curves thinned out (`--evals-per-epoch`).",
        "",
        "| reports an epoch | pruner | warm-up (epochs) | patience (epochs) | start-up trials | trials cut "
        "| training steps saved | best value kept |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, replays in by_rate.items():
        for setting, replay in replays.items():
            best = "-" if replay.best_value is None else f"{replay.best_value:.4f}"
            startup = "-" if setting.startup is None else setting.startup
            lines.append(
                f"| {rate} | {setting.name} | {setting.warmup_epochs:g} | {setting.patience_epochs:g} "
                f"| {startup} | {replay.pruned} | {replay.steps_saved:.0%} | {best} |"
            )
    return lines


def plot_history(study: optuna.Study, path: Path) -> None:
    """Each finished trial's value, coloured by outcome, and the best value so far.

    Drawn here rather than by ``optuna.visualization.matplotlib.plot_optimization_history``, which
    plots a pruned trial at its Optuna value (the pruner's signal, ROC AUC by default) and cannot
    tell collapsed and diverged trials from pruned ones.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING]
    maximize = maximizes(study.user_attrs.get("metric", "macro_f1"))
    fig, ax = plt.subplots(figsize=(7, 4))
    best, xs, ys = None, [], []
    for trial in trials:
        value = metric_value(trial, study.user_attrs.get("metric", "macro_f1"))
        if value is None:
            continue
        ax.scatter(trial.number, value, color=STATE_COLOURS.get(trial_state(trial), "black"), s=18)
        if trial.state == TrialState.COMPLETE:
            best = value if best is None else (max if maximize else min)(best, value)
        if best is not None:
            xs.append(trial.number)
            ys.append(best)
    ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    for state, colour in STATE_COLOURS.items():
        ax.scatter([], [], color=colour, label=state, s=18)
    ax.set(xlabel="trial", ylabel=study.user_attrs.get("metric", "value"), title=study.study_name)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(study: optuna.Study, path: Path) -> None:
    """What each trial reported per evaluation (its best pruner signal so far); pruned and cut-short
    trials dashed, which ``plot_intermediate_values`` cannot show."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps, values = zip(*sorted(trial.intermediate_values.items()), strict=True)
        state = trial_state(trial)
        ax.plot(steps, values, color=STATE_COLOURS.get(state, "black"), linestyle="-" if state == "complete" else "--",
                alpha=0.6, marker=".")  # fmt: skip
    # Studies from before --pruner-signal existed reported their metric.
    signal = study.user_attrs.get("pruner_signal") or study.user_attrs.get("metric", "value")
    ax.set(xlabel="evaluation (epoch)", ylabel=f"best {signal} so far", title="learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pareto(study: optuna.Study, path: Path) -> None:
    """Optuna's own Pareto-front plot of a multi-objective study (two or three objectives)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=study.user_attrs.get("objectives")
        )
    ax.figure.set_size_inches(7, 5)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def plot_importance(readable: optuna.Study, path: Path) -> None:
    """Optuna's own importance plot of :func:`readable_study`'s trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(readable, evaluator=_evaluator())
    ax.figure.set_size_inches(7, 0.4 * len(readable.best_params) + 1.5)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def write_report(study: optuna.Study, out: Path) -> list[Path]:
    """Write every table and plot for ``study`` into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    readable = readable_study(study)
    weights = importances(readable)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(out / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.md").write_text(summary_markdown(study, rows, weights))
    plot_history(study, out / "history.png")
    plot_curves(study, out / "curves.png")
    written = [out / name for name in ("trials.csv", "summary.md", "history.png", "curves.png")]
    if len(study.directions) in (2, 3) and pareto_trials(study):
        plot_pareto(study, out / "pareto.png")
        written.append(out / "pareto.png")
    if weights:
        plot_importance(readable, out / "importance.png")
        written.append(out / "importance.png")
    return written


DEFAULT_OUT = "toxitune-reports"


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m reports.study", description="Tables and plots of a stored study.")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})"
    )
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: {DEFAULT_OUT}/STUDY, outside the code)"
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the replay's in-memory studies announce themselves
    out = args.out or Path(DEFAULT_OUT) / args.study
    for path in write_report(load_study(args.study, args.storage), out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)

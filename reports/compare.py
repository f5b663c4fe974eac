"""The experiment's answer: ``python -m reports.compare --experiment DIR`` (or ``--final DIR ...``).

Writes ``DIR/report/`` (with ``--final``, ``--out``): ``report.md``, its PNG figures, and
``index.html``, the same page with the figures inlined, which opens from disk with no network. It
holds the original study's table (recipe rows beside tuned rows, mean ± 95% CI over seeds), paired
bootstraps that say which differences are real, each method's confusion matrix, training curves and
study plots, the shipped models' size and CPU latency (:mod:`trainers.efficiency`), and a verdict.
It reads what the experiment stored and measures the shipped models; it trains nothing.

``--final`` on the folder of a retrained Pareto front (``search.train`` on a ``search.export
--pareto`` file) gives a row per candidate, so the quality-latency figure draws each one's test
macro-F1 with its CI, over seeds, against its latency.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reports.study import plot_curves, plot_history, plot_importance, readable_study  # noqa: E402
from search.train import mean_ci, seed_report_path  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.errors import ConfigError  # noqa: E402

RESAMPLES = 1000
# The table's columns: what each seed's report gives.
COLUMNS = {
    "final training loss": lambda run: run["history"][-1]["train_loss"],
    "accuracy": lambda run: run["test"]["accuracy"],
    "precision": lambda run: run["test"]["precision"],
    "recall": lambda run: run["test"]["recall"],
    "weighted F1": lambda run: run["test"]["weighted_f1"],
    "macro-F1": lambda run: run["test"]["macro_f1"],
}


@dataclass(frozen=True)
class Row:
    """One shipped configuration: a method's tuned winner, its recipe, or a retrained export.

    ``runs`` are the seed reports of the candidate that shipped, ``shipped`` the one whose model did.
    """

    name: str
    method: str
    arm: str
    folder: Path
    runs: list[dict[str, Any]]
    shipped: dict[str, Any] | None
    status: str

    @property
    def scored(self) -> list[dict[str, Any]]:
        """The runs evaluated on test (a run with no evaluation at all was never scored)."""
        return [run for run in self.runs if run["test"] is not None]

    def value(self, column: str) -> dict[str, Any]:
        return mean_ci([COLUMNS[column](run) for run in self.scored])


def retrained_row(folder: Path, *, method: str, arm: str) -> Row:
    """The row of what ``search.train`` (or :func:`search.api.retrain`) wrote to ``folder``."""
    report = json.loads((folder / "metrics.json").read_text())
    winner = next(candidate for candidate in report["candidates"] if candidate["trial"] == report["winner"])
    return _candidate_row(
        folder, winner, name=f"{method} ({arm})", method=method, arm=arm, model_folder=folder
    )


def front_rows(folder: Path, *, arm: str) -> list[Row]:
    """One row per candidate that ``search.train`` retrained from a Pareto export in ``folder``.

    Each candidate's model is its own best seed, under ``candidates/trial-N``; a candidate still on the
    front after retraining is named so.
    """
    report = json.loads((folder / "metrics.json").read_text())
    rows = []
    for candidate in report["candidates"]:
        method = candidate["config"]["method"]
        front = "front" if candidate["pareto"] else "dropped"
        rows.append(
            _candidate_row(
                folder,
                candidate,
                name=f"{arm} trial {candidate['trial']} ({method}, {front})",
                method=method,
                arm=arm,
                model_folder=folder / "candidates" / f"trial-{candidate['trial']}",
            )
        )
    return rows


def _candidate_row(
    folder: Path, candidate: dict[str, Any], *, name: str, method: str, arm: str, model_folder: Path
) -> Row:
    runs = [
        json.loads(seed_report_path(folder, candidate["trial"], seed).read_text())
        for seed in candidate["seeds"]
    ]
    best_seed = folder / "candidates" / f"trial-{candidate['trial']}" / "best_seed.json"
    seed = json.loads(best_seed.read_text())["seed"] if best_seed.exists() else None
    failed = candidate["failed_seeds"]
    status = (
        "ok" if not failed else f"{'every seed' if len(failed) == len(runs) else f'seeds {failed}'} failed"
    )
    return Row(
        name=name,
        method=method,
        arm=arm,
        folder=model_folder,
        runs=runs,
        shipped=next((run for run in runs if run["seed"] == seed), None),
        status=status,
    )


def experiment_rows(out: Path) -> list[Row]:
    """Every row of the experiment in ``out``: per method, tuned then recipe."""
    record = json.loads((out / "experiment.json").read_text())
    rows = []
    for method in record["experiment"]["methods"]:
        for arm in ("tuned", "recipe"):
            if (out / method / arm / "metrics.json").exists():
                rows.append(retrained_row(out / method / arm, method=method, arm=arm))
    return rows


def paired_difference(labels: np.ndarray, a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    """Mean test macro-F1 of the runs ``a`` minus that of ``b``, with a paired bootstrap 95% interval.

    Each resample draws test examples with replacement and scores every run of both sides on the same
    draw, so what the two share (hard tweets, easy ones) cancels out of the difference.
    """
    from scipy import stats
    from sklearn.metrics import f1_score

    def statistic(index: np.ndarray) -> float:
        def mean_f1(runs: list[np.ndarray]) -> float:
            return float(np.mean([f1_score(labels[index], run[index], average="macro") for run in runs]))

        return mean_f1(a) - mean_f1(b)

    everything = np.arange(len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # a model against itself: always 0
        result = stats.bootstrap(
            (everything,),
            statistic,
            vectorized=False,
            n_resamples=RESAMPLES,
            method="percentile",
            random_state=0,
        )
    low, high = result.confidence_interval
    return {"difference": statistic(everything), "low": float(low), "high": float(high)}


def differences(rows: list[Row]) -> list[tuple[Row, Row, dict[str, float]]]:
    """Every pair of shipped rows, and each method's tuned row against its recipe, with their difference."""
    # Runs from before test predictions were kept cannot be resampled.
    scored = [row for row in rows if row.scored and all(run.get("test_predictions") for run in row.scored)]
    shipped = [row for row in scored if row.arm != "recipe"]
    pairs = list(itertools.combinations(shipped, 2))
    pairs += [
        (tuned, recipe)
        for tuned in shipped
        for recipe in scored
        if recipe.arm == "recipe" and recipe.method == tuned.method
    ]
    results = []
    for a, b in pairs:
        labels = np.asarray(a.scored[0]["test_labels"])
        preds = [[np.asarray(run["test_predictions"]) for run in row.scored] for row in (a, b)]
        results.append((a, b, paired_difference(labels, *preds)))
    return results


def efficiency(row: Row) -> dict[str, Any] | None:
    """The shipped model's cost (:func:`trainers.efficiency.measure`), measured once and kept beside it."""
    model = row.folder / "model"
    if not model.is_dir() or row.shipped is None:
        return None
    cached = row.folder / "efficiency.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from trainers.config import DataConfig
    from trainers.data import load_splits
    from trainers.efficiency import measure
    from trainers.settings import from_dict

    data = from_dict(DataConfig, row.shipped["config"]["data"])
    texts = load_splits(data, batch_size=1).validation.texts
    trained = row.shipped.get("parameters", {}).get("trained")
    measured = {**measure(model, texts, max_length=data.max_length).to_dict(), "trained": trained}
    cached.write_text(json.dumps(measured, indent=2))
    return measured


def write_report(out: Path, rows: list[Row] | None = None, *, report: Path | None = None) -> Path:
    """Write the report of the experiment in ``out`` (or of ``rows``) to ``report`` (default ``out/report``).

    Raises:
        ConfigError: No finished run to report on.
    """
    rows = experiment_rows(out) if rows is None else rows
    if not any(row.scored for row in rows):
        raise ConfigError(f"{out} holds no finished run to report on; run python -m search.experiment first")
    report = report or out / "report"
    report.mkdir(parents=True, exist_ok=True)
    costs = {row.name: efficiency(row) for row in rows}
    pairs = differences(rows)
    figures = _figures(out, rows, costs, report)
    markdown_text = _markdown(out, rows, costs, pairs, figures)
    (report / "report.md").write_text(markdown_text)
    (report / "index.html").write_text(_html(markdown_text, report))
    return report


def _figures(out: Path, rows: list[Row], costs: dict[str, Any], report: Path) -> dict[str, list[str]]:
    """Draw every figure into ``report``; return each row's figure names (and ``""`` for shared ones)."""
    figures: dict[str, list[str]] = {"": []}
    for row in rows:
        names = figures.setdefault(row.name, [])
        slug = re.sub(r"[^a-z0-9]+", "-", row.name.lower()).strip("-")
        if row.shipped is not None and row.shipped["confusion_matrix"] is not None:
            names.append(_confusion(row, report / f"confusion-{slug}.png"))
            names.append(_training_curves(row, report / f"training-{slug}.png"))
        study = _study(out, row)
        if study is not None:
            plot_history(study, report / f"history-{slug}.png")
            plot_curves(study, report / f"trials-{slug}.png")
            names += [f"history-{slug}.png", f"trials-{slug}.png"]
            if (readable := readable_study(study)) is not None:
                plot_importance(readable, report / f"importance-{slug}.png")
                names.append(f"importance-{slug}.png")
    if any(costs.values()):
        figures[""].append(_quality_latency(rows, costs, report / "quality-latency.png"))
    return figures


def _study(out: Path, row: Row):
    if row.arm != "tuned" or not (out / "studies.db").exists():
        return None
    from search.export import load_study

    record = json.loads((out / "experiment.json").read_text())
    name = f"{row.method}-{record['preset'] or 'custom'}"
    return load_study(name, f"sqlite:///{out / 'studies.db'}")


def _confusion(row: Row, path: Path) -> str:
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay(
        np.asarray(row.shipped["confusion_matrix"]), display_labels=row.shipped["label_names"]
    )
    display.plot(colorbar=False, cmap="Blues")
    display.ax_.set_title(f"{row.name}: test, seed {row.shipped['seed']}")
    display.ax_.grid(False)  # the style's grid would cross the cells
    return _save(display.figure_, path)


def _training_curves(row: Row, path: Path) -> str:
    """The shipped run's training losses and validation loss per evaluation, as the original study drew them."""
    history = row.shipped["history"]
    epochs = [record["epoch"] for record in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("train_loss", "train total"), ("train_cls", "train cls"), ("train_div", "train div"),
                       ("train_cos", "train cos")):  # fmt: skip
        if any(record[key] for record in history):
            ax.plot(epochs, [record[key] for record in history], marker=".", label=label)
    ax.plot(
        epochs,
        [record["validation"]["loss"] for record in history],
        marker=".",
        linestyle="--",
        label="validation",
    )
    ax.set(xlabel="epoch", ylabel="loss", title=f"{row.name}: seed {row.shipped['seed']}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _quality_latency(rows: list[Row], costs: dict[str, Any], path: Path) -> str:
    """Test macro-F1 (mean and 95% CI) against batch-1 latency, with the Pareto front drawn."""
    points = []
    for row in rows:
        if costs[row.name] and row.scored:
            f1 = row.value("macro-F1")
            points.append(
                (costs[row.name]["latency_ms"]["1"]["p50"], f1["mean"], f1["ci95"] or 0.0, row.name)
            )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for latency, mean, half, name in points:
        ax.errorbar(latency, mean, yerr=half, fmt="o", capsize=3)
        ax.annotate(name, (latency, mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front, best = [], -np.inf
    for latency, mean, _, _ in sorted(points):
        if mean > best:  # nothing faster scores higher
            front.append((latency, mean))
            best = mean
    ax.step(*zip(*front, strict=True), where="post", color="tab:green", label="Pareto front")
    cpu = next(cost for cost in costs.values() if cost)
    ax.set(xlabel=f"latency at batch 1, p50 (ms; torch threads {cpu['threads']})", ylabel="test macro-F1",
           title="quality against latency")  # fmt: skip
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _show(summary: dict[str, Any], scale: float = 1.0) -> str:
    if not summary["n"]:
        return "-"
    text = f"{summary['mean'] * scale:.4f}"
    return text + (f" ± {summary['ci95'] * scale:.4f}" if summary["ci95"] is not None else "")


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _distinguishable(result: dict[str, float]) -> bool:
    return result["low"] > 0 or result["high"] < 0


def _verdict(
    rows: list[Row], costs: dict[str, Any], pairs: list[tuple[Row, Row, dict[str, float]]]
) -> list[str]:
    shipped = [row for row in rows if row.arm != "recipe" and row.scored]
    if not shipped:
        return ["No method shipped a model that was scored on test."]

    def between(a: Row, b: Row) -> dict[str, float] | None:
        for x, y, result in pairs:
            if x is a and y is b:
                return result
            if x is b and y is a:
                return {"difference": -result["difference"], "low": -result["high"], "high": -result["low"]}
        return None

    best = max(shipped, key=lambda row: row.value("macro-F1")["mean"])
    ties = [row.name for row in shipped if row is not best and not _distinguishable(between(best, row))]
    lines = [
        f"- **For quality, ship {best.name}**: test macro-F1 {_show(best.value('macro-F1'))}"
        + (
            f"; not distinguishable on this test set from {', '.join(ties)}."
            if ties
            else ", ahead of every other method."
        )
    ]
    timed = [row for row in shipped if costs.get(row.name)]
    if timed:
        quickest = min(timed, key=lambda row: costs[row.name]["latency_ms"]["1"]["p50"])
        # Models of one architecture run alike, so their measured gap is noise: of those, the best ships.
        alike = [row for row in timed if costs[row.name]["parameters"] == costs[quickest.name]["parameters"]]
        fastest = max(alike, key=lambda row: row.value("macro-F1")["mean"])
        cost = between(fastest, best) if fastest is not best else None
        lines.append(
            f"- **For speed, ship {fastest.name}**: {costs[fastest.name]['latency_ms']['1']['p50']:.1f} ms a text at batch 1"
            + (f"; macro-F1 {_against(cost)} against {best.name}." if cost else ", and it is also the best.")
        )
    full = next((row for row in timed if row.method == "lora"), None)
    for row in timed:
        if full is None or row is full:
            continue
        speed = costs[full.name]["latency_ms"]["1"]["p50"] / costs[row.name]["latency_ms"]["1"]["p50"]
        share = costs[row.name]["parameters"] / costs[full.name]["parameters"]
        lines.append(
            f"- {row.name} against the full-depth {full.name}: macro-F1 {_against(between(row, full))}; "
            f"{speed:.2f}× its speed at batch 1, {share:.0%} of its parameters."
        )
    return lines


def _against(result: dict[str, float]) -> str:
    points = f"{_points(result['difference'])} points [{_points(result['low'])}, {_points(result['high'])}]"
    return points if _distinguishable(result) else f"{points}, not distinguishable on this test set"


def _markdown(
    out: Path, rows: list[Row], costs: dict[str, Any], pairs: list, figures: dict[str, list[str]]
) -> str:
    timed = next((cost for cost in costs.values() if cost), None)
    lines = [f"# Experiment `{out.name}`", ""]
    record = out / "experiment.json"
    if record.exists():
        settings = json.loads(record.read_text())
        lines += [
            f"Preset `{settings['preset'] or 'none'}`; "
            + ", ".join(f"{key} `{value}`" for key, value in settings["experiment"].items())
            + ".",
            "",
        ]
    lines += ["## Verdict", "", *_verdict(rows, costs, pairs), ""]
    lines += ["## The original study's table", "", "Test metrics after training, mean ± 95% CI over seeds; "
              "precision, recall and weighted F1 are support-weighted, as in the original study.", ""]  # fmt: skip
    lines += ["| | status | seeds | " + " | ".join(COLUMNS) + " |", "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for row in rows:
        values = " | ".join(_show(row.value(column)) for column in COLUMNS)
        lines.append(f"| {row.name} | {row.status} | {len(row.scored)} | {values} |")
    if pairs:
        n = len(pairs[0][0].scored[0]["test_labels"])
        lines += ["", "## Which differences are real", "",
                  f"Paired bootstrap over the {n} test examples ({RESAMPLES} resamples): the difference of mean "
                  "test macro-F1, in points, and its 95% interval.", "",
                  "| comparison | difference | 95% interval | verdict |", "|---|---:|---:|---|"]  # fmt: skip
        for a, b, result in pairs:
            verdict = "real" if _distinguishable(result) else "not distinguishable on this test set"
            lines.append(f"| {a.name} − {b.name} | {_points(result['difference'])} | "
                         f"[{_points(result['low'])}, {_points(result['high'])}] | {verdict} |")  # fmt: skip
    if timed:
        lines += ["", "## Efficiency", "",
                  f"Shipped models on this machine: {timed['cpu']}, torch threads {timed['threads']}, float32, "
                  f"{timed['repeats']} timed passes per batch size after warm-up, validation texts of up to "
                  f"{timed['max_length']} tokens.", "",
                  "| | parameters | trained | size on disk | batch 1 p50 / p95 (ms) | batch 32 p50 / p95 (ms) | texts/s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in rows:
            cost = costs[row.name]
            if cost:
                one, many = cost["latency_ms"]["1"], cost["latency_ms"]["32"]
                trained = "-" if cost["trained"] is None else f"{cost['trained']:,}"
                lines.append(f"| {row.name} | {cost['parameters']:,} | {trained} | {cost['size_bytes'] / 2**20:.1f} MiB | "
                             f"{one['p50']:.1f} / {one['p95']:.1f} | {many['p50']:.1f} / {many['p95']:.1f} | "
                             f"{cost['examples_per_second']:.0f} |")  # fmt: skip
        lines += ["", *(f"![{name}]({name})" for name in figures[""])]
    for row in rows:
        if figures.get(row.name):
            lines += ["", f"## {row.name}", "", *(f"![{name}]({name})" for name in figures[row.name])]
    return "\n".join(lines) + "\n"


def _html(markdown_text: str, report: Path) -> str:
    """The Markdown as one page, its figures inlined, so it opens from disk with no network."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def inline(match: re.Match[str]) -> str:
        data = base64.b64encode((report / match["src"]).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(?P<src>[^"/]+\.png)"', inline, body)
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "th{background:#f3f3f3}img{max-width:48%;margin:.3em}")  # fmt: skip
    return f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>toxitune report</title><style>{style}</style></head>\n<body>\n{body}\n</body></html>\n'


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m reports.compare", description="Compare an experiment's methods.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", type=Path, help="a folder written by python -m search.experiment")
    source.add_argument(
        "--final",
        type=Path,
        nargs="+",
        help="folders written by python -m search.train; a retrained Pareto front gives a row per candidate",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: EXPERIMENT/report; with --final, required)"
    )
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(
        optuna.logging.WARNING
    )  # the study plots' in-memory studies announce themselves
    if args.experiment is not None:
        if not (args.experiment / "experiment.json").exists():
            raise ConfigError(f"{args.experiment}: no experiment.json; run python -m search.experiment first")
        report = write_report(args.experiment, report=args.out)
    else:
        if args.out is None:
            raise ConfigError("--final needs --out, the folder to write the report to")
        rows = []
        for folder in args.final:
            if not (folder / "metrics.json").exists():
                raise ConfigError(f"{folder}: no metrics.json; run python -m search.train first")
            report = json.loads((folder / "metrics.json").read_text())
            if report["winner"] is None:  # a retrained Pareto front: every candidate is a row
                rows += front_rows(folder, arm=folder.name)
                continue
            method = report["candidates"][0]["config"]["method"]
            rows.append(retrained_row(folder, method=method, arm=folder.name))
        report = write_report(args.out, rows, report=args.out)
    print(f"wrote {report / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_main(main)

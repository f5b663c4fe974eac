"""search.experiment and reports.compare, end to end on tiny models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reports.compare import experiment_rows, paired_difference
from reports.compare import main as compare_main
from search.experiment import ExperimentConfig, main, run_experiment
from search.train import mean_ci
from trainers.errors import ConfigError


def _settings(checkpoint: Path, data: Path) -> dict:
    return {
        "data": {"dataset": str(data), "max_length": 32},
        "teacher": {"name": str(checkpoint), "epochs": 2, "lr": 3e-3, "batch_size": 16},
        "epochs": 2,
        "batch_size": 16,
    }


@pytest.fixture(scope="module")
def experiment(trained_checkpoint, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment") / "quick"
    config = ExperimentConfig(methods=("odd", "lora"), trials=2, seeds=2, baseline="recipe")
    settings = _settings(trained_checkpoint, toy_data)
    study = {"wandb": {"mode": "disabled"}}
    cache_dir = out.parent / "cache"
    run_experiment(config, out=out, settings=settings, study=study, cache_dir=cache_dir, progress=False)
    return out, config, settings, study, cache_dir


def test_every_method_is_searched_retrained_beside_its_recipe_and_reported(experiment):
    out, *_ = experiment
    for method in ("odd", "lora"):
        for arm in ("tuned", "recipe"):
            assert (out / method / arm / "model" / "model.safetensors").is_file()
    report = out / "report"
    assert {"index.html", "report.md", "quality-latency.png"} <= {path.name for path in report.iterdir()}
    assert {"confusion-odd-tuned.png", "training-odd-tuned.png", "history-odd-tuned.png"} <= {
        path.name for path in report.iterdir()
    }


def test_the_table_holds_the_stored_seed_metrics(experiment):
    out, *_ = experiment
    markdown = (out / "report" / "report.md").read_text()
    for method in ("odd", "lora"):
        metrics = json.loads((out / method / "tuned" / "metrics.json").read_text())
        [winner] = [c for c in metrics["candidates"] if c["trial"] == metrics["winner"]]
        runs = [
            json.loads(
                (out / method / "tuned" / "runs" / f"trial-{winner['trial']}-seed-{seed}.json").read_text()
            )
            for seed in winner["seeds"]
        ]
        accuracy = mean_ci([run["test"]["accuracy"] for run in runs])
        loss = mean_ci([run["history"][-1]["train_loss"] for run in runs])
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {method} (tuned) |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3] == f"{loss['mean']:.4f} ± {loss['ci95']:.4f}"
        assert cells[4] == f"{accuracy['mean']:.4f} ± {accuracy['ci95']:.4f}"


def test_a_model_against_itself_differs_by_nothing():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 200), [rng.integers(0, 2, 200) for _ in range(2)]
    assert paired_difference(labels, predictions, predictions) == {"difference": 0.0, "low": 0.0, "high": 0.0}
    better = [labels.copy(), labels.copy()]
    result = paired_difference(labels, better, predictions)
    assert result["low"] > 0.3, "a perfect model is distinguishable from a coin"


def test_the_page_fetches_nothing_and_renders_in_chromium(experiment, tmp_path):
    out, *_ = experiment
    page = out / "report" / "index.html"
    html = page.read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"https?://|(?:src|href)=\"//|@import|url\(", text), "nothing fetched from anywhere"
    assert html.count("data:image/png;base64,") >= 5
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        tab.goto(page.as_uri())
        tab.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    pixels = np.asarray(Image.open(tmp_path / "page.png").convert("L"), dtype=float)
    assert pixels.std() > 20, "the screenshot shows tables and figures, not a blank page"


def test_a_rerun_trains_nothing(experiment, capsys):
    out, config, settings, study, cache_dir = experiment
    written = [*out.rglob("runs/*.json"), out / "report" / "index.html"]
    stamps = {path: path.stat().st_mtime_ns for path in written}
    run_experiment(config, out=out, settings=settings, study=study, cache_dir=cache_dir, progress=False)
    assert {path: path.stat().st_mtime_ns for path in written} == stamps
    printed = capsys.readouterr().out
    assert "[report] up to date" in printed
    assert printed.count("2/2 trials finished") == 2
    assert not re.search(r"^trial \S+ seed \d+:", printed, re.MULTILINE), "no seed was trained again"


def test_an_out_folder_of_another_experiment_is_refused(experiment):
    out, config, settings, study, cache_dir = experiment
    other = ExperimentConfig(methods=("odd", "lora"), trials=3, seeds=2, baseline="recipe")
    with pytest.raises(
        ConfigError, match=r"holds an experiment with other settings \(experiment.trials was 2, now 3\)"
    ):
        run_experiment(other, out=out, settings=settings, study=study, cache_dir=cache_dir, progress=False)


def test_a_method_whose_every_seed_collapsed_still_has_its_row(experiment, tmp_path):
    out, *_ = experiment
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for path in (copy / "lora" / "recipe" / "runs").glob("*.json"):
        run = json.loads(path.read_text())
        path.write_text(json.dumps({**run, "status": "collapsed"}))
    metrics = json.loads((copy / "lora" / "recipe" / "metrics.json").read_text())
    metrics["candidates"][0]["failed_seeds"] = metrics["candidates"][0]["seeds"]
    (copy / "lora" / "recipe" / "metrics.json").write_text(json.dumps(metrics))
    assert compare_main(["--experiment", str(copy)]) == 0
    assert "| lora (recipe) | every seed failed | 2 |" in (copy / "report" / "report.md").read_text()
    assert [row.name for row in experiment_rows(copy)] == [
        "odd (tuned)",
        "odd (recipe)",
        "lora (tuned)",
        "lora (recipe)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "odd,bert"], "methods (--methods) holds ['bert']"),
        (["--seeds", "0"], "seeds (--seeds) must be at least 1, but got 0"),
    ],
)
def test_bad_experiment_input_is_one_line_and_starts_nothing(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "search.experiment", "--out", str(tmp_path / "out"), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_compare_on_a_folder_without_runs_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "experiment.json").write_text(
        json.dumps({"experiment": {"methods": ["odd"]}, "preset": None})
    )
    result = subprocess.run(
        [sys.executable, "-m", "reports.compare", "--experiment", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "holds no finished run" in lines[0], result.stderr


def test_the_command_line_runs_what_the_python_api_runs(trained_checkpoint, toy_data, tmp_path):
    args = [
        "--methods", "lora", "--trials", "1", "--seeds", "1", "--out", str(tmp_path / "cli"),
        "--dataset", str(toy_data), "--teacher", str(trained_checkpoint), "--max-length", "32", "--epochs", "2",
        "--batch-size", "16", "--wandb-mode", "disabled", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    assert (tmp_path / "cli" / "report" / "index.html").is_file()


def test_the_speed_pick_ignores_latency_noise_between_models_of_one_architecture(tmp_path):
    from reports.compare import Row, _verdict

    def row(method: str, f1: float) -> Row:
        runs = [{"seed": 0, "test": {"macro_f1": f1}}]
        return Row(f"{method} (tuned)", method, "tuned", tmp_path, runs, None, "ok")

    odd, even, lora = row("odd", 0.77), row("even", 0.75), row("lora", 0.78)

    def cost(ms: float, parameters: int) -> dict:
        return {"latency_ms": {"1": {"p50": ms}}, "parameters": parameters}

    costs = {"odd (tuned)": cost(3.9, 17), "even (tuned)": cost(3.4, 17), "lora (tuned)": cost(6.9, 22)}
    tie = {"difference": 0.0, "low": -0.01, "high": 0.01}
    pairs = [(odd, even, tie), (odd, lora, tie), (even, lora, tie)]
    lines = _verdict([odd, even, lora], costs, pairs)
    assert lines[1].startswith("- **For speed, ship odd (tuned)**: 3.9 ms"), lines

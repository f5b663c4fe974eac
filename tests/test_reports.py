from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from reports.study import importances, main, readable_study, write_report
from studies.spaces import default_space, suggest
from trainers.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _study(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="demo", storage=storage, direction="maximize")
    study.set_user_attr("metric", "macro_f1")
    study.set_user_attr("method", "lora")
    dists = {"lr": FloatDistribution(1e-5, 1e-2, log=True), "lora.rank": IntDistribution(4, 64)}
    for i, (lr, rank, value) in enumerate(
        [(1e-3, 8, 0.71), (3e-4, 16, 0.78), (2e-3, 32, 0.74), (5e-4, 4, 0.76)]
    ):
        study.add_trial(create_trial(
            value=value, params={"lr": lr, "lora.rank": rank}, distributions=dists,
            intermediate_values={1: value - 0.05, 2: value}, user_attrs={"steps": 100, "best_epoch": 2.0 + i % 2},
        ))  # fmt: skip
    study.add_trial(create_trial(
        state=TrialState.PRUNED, params={"lr": 1e-2, "lora.rank": 4}, distributions=dists,
        intermediate_values={1: 0.41}, user_attrs={"steps": 50, "status": "collapsed", "reason": "every prediction is class 0"},
    ))  # fmt: skip
    study.add_trial(create_trial(
        state=TrialState.PRUNED, params={"lr": 1e-5, "lora.rank": 4}, distributions=dists,
        intermediate_values={1: 0.5}, user_attrs={"steps": 50, "status": "pruned"},
    ))  # fmt: skip
    return storage


def test_report_tables_and_plots(tmp_path):
    storage = _study(tmp_path)
    out = tmp_path / "report"
    assert main(["--study", "demo", "--storage", storage, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [r["state"] for r in rows] == ["complete"] * 4 + ["collapsed", "pruned"]
    assert rows[4]["reason"] == "every prediction is class 0" and rows[1]["param:lora.rank"] == "16"
    summary = (out / "summary.md").read_text()
    assert "| complete | 4 | 400 | 80% |" in summary
    assert "| collapsed | 1 | 50 | 10% |" in summary
    assert "trial 1, validation macro_f1 0.7800" in summary
    assert "| lr |" in summary and "importance" in summary
    assert "Importances from 4 completed trials: a hint, not a ranking" in summary
    for name in ("history.png", "curves.png", "importance.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_default_output_folder_is_outside_the_code(tmp_path, monkeypatch):
    storage = _study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--study", "demo", "--storage", storage]) == 0
    assert (tmp_path / "toxitune-reports" / "demo" / "summary.md").is_file()


def test_a_study_without_completed_trials_still_reports(tmp_path):
    study = optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path}/e.db")
    written = write_report(study, tmp_path / "r")
    assert [p.name for p in written] == ["trials.csv", "summary.md", "history.png", "curves.png"]


def _unpruned_study(tmp_path, epochs: int = 2, evals_per_epoch: int = 1) -> optuna.Study:
    study = optuna.create_study(
        study_name="sweep", storage=f"sqlite:///{tmp_path}/u.db", direction="maximize"
    )
    study.set_user_attr("base_config", {"epochs": epochs, "evals_per_epoch": evals_per_epoch})
    # Six steady trials, then a late bloomer that ends best; the median pruner judges its first epoch.
    curves = [{1: 0.6 + 0.01 * i, 2: 0.7 + 0.01 * i} for i in range(6)] + [{1: 0.3, 2: 0.9}]
    for curve in curves:
        study.add_trial(create_trial(value=curve[2], intermediate_values=curve, user_attrs={"steps": 100}))
    return study


def test_a_study_no_pruner_cut_reports_what_each_pruner_would_have_saved(tmp_path):
    write_report(_unpruned_study(tmp_path), tmp_path / "r")
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "## What a pruner would have saved" in summary
    # Columns: reports an epoch, pruner, warm-up, patience, start-up trials, cut, steps saved, best kept.
    # Cut after 50 of 700 steps, the late bloomer loses the best:
    assert "| 1 | median | 0 | 0 | 5 | 1 | 7% | 0.7500 |" in summary
    assert "| 1 | median | 0.5 | 0 | 5 | 0 | 0% | 0.9000 |" in summary  # judged from epoch 2 on: keeps it
    assert "| 1 | median | 0 | 0.25 | 5 | 0 | 0% | 0.9000 |" in summary  # spared: its first report
    assert "| 1 | median | 0 | 0 | 3 | 1 | 7% | 0.7500 |" in summary
    assert "| 1 | hyperband | 0 | 0 | - |" in summary


def test_the_replay_also_shows_fewer_reports_an_epoch(tmp_path):
    # The same curves as two reports in one epoch: thinned to one report, the late bloomer's only
    # report is its best, and the median pruner keeps it.
    write_report(_unpruned_study(tmp_path, epochs=1, evals_per_epoch=2), tmp_path / "r")
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "| 2 | median | 0 | 0 | 5 | 1 | 7% | 0.7500 |" in summary
    assert "| 1 | median | 0 | 0 | 5 | 0 | 0% | 0.9000 |" in summary


def test_a_study_a_pruner_acted_on_has_no_replay(tmp_path):
    storage, out = _study(tmp_path), tmp_path / "report"
    study = optuna.load_study(study_name="demo", storage=storage)
    study.set_user_attr("base_config", {"epochs": 2, "evals_per_epoch": 1})
    assert main(["--study", "demo", "--storage", storage, "--out", str(out)]) == 0
    assert "would have saved" not in (out / "summary.md").read_text()


def test_a_distillation_report_shows_the_loss_weights_not_the_draws_behind_them(tmp_path):
    study = optuna.create_study(
        study_name="distil", storage=f"sqlite:///{tmp_path}/d.db", direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    study.set_user_attr("metric", "macro_f1")
    space = default_space("odd")
    # A value that only w_div decides: the importances must say so, which no single draw can.
    study.optimize(lambda trial: suggest(trial, TrainConfig(method="odd"), space).loss.w_div, n_trials=30)
    weights = importances(readable_study(study))
    assert max(weights, key=weights.get) == "w_div"
    assert not any(name.endswith("_draw") for name in weights)
    write_report(study, tmp_path / "r")
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert f"| w_div | {study.best_value:.4g} |" in summary and "_draw" not in summary
    assert "a hint, not a ranking" not in summary  # 30 completed trials
    header = next(csv.reader(open(tmp_path / "r" / "trials.csv")))
    assert {"param:w_cls", "param:w_div", "param:w_cos"} <= set(header)
    assert not any(name.endswith("_draw") for name in header)


def test_reporting_from_a_missing_database_creates_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reports.study", "--study", "unknown", "--out", "report"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: no database"), lines
    assert list(tmp_path.iterdir()) == []

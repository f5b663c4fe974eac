from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from transformers import AutoModelForSequenceClassification

from search import export, run
from search import train as retrain
from search.export import ranked_trials, read_document
from search.train import mean_ci, pick_winner
from trainers.errors import ConfigError


def _study_args(tiny_checkpoint, toy_data, tmp_path):
    return [
        "--method", "even", "--trials", "3", "--dataset", str(toy_data), "--teacher", str(tiny_checkpoint),
        "--teacher-epochs", "10", "--teacher-lr", "3e-3", "--teacher-batch-size", "16", "--epochs", "2", "--max-length", "32",
        "--collapse-warmup-epochs", "99", "--storage", f"sqlite:///{tmp_path}/s.db",
        "--cache-dir", str(tmp_path / "cache"), "--wandb-mode", "disabled", "--no-progress",
    ]  # fmt: skip


@pytest.fixture
def finished_study(tiny_checkpoint, toy_data, tmp_path):
    assert run.main(_study_args(tiny_checkpoint, toy_data, tmp_path)) == 0
    return optuna.load_study(study_name="even-custom", storage=f"sqlite:///{tmp_path}/s.db")


def test_export_then_retrain_round_trip(finished_study, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "best.yaml"
    assert (
        export.main(["--study", "even-custom", "--storage", storage, "--out", str(out), "--top-k", "2"]) == 0
    )
    document = yaml.safe_load(out.read_text())
    ranked = ranked_trials(finished_study)
    assert [c["trial"] for c in document["candidates"]] == [t.number for t in ranked[:2]]
    best = document["candidates"][0]
    assert best["validation_score"] == ranked[0].value
    assert best["config"] == ranked[0].user_attrs["config"], "every resolved setting, not only tuned ones"
    assert set(best["config"]) >= {"lr", "epochs", "batch_size", "data", "teacher", "loss", "seed"}
    assert "lora" not in best["config"], "only the settings distillation uses"
    assert document["data"]["label_names"] == ["0", "1"] and len(document["data"]["fingerprint"]) == 16
    assert document["method"] == "even" and document["metric"] == "macro_f1"
    assert document["environment"]["packages"]["torch"]
    assert "wandb_run" in best

    result = tmp_path / "retrained"
    args = [
        "--config",
        str(out),
        "--seeds",
        "2",
        "--top-k",
        "2",
        "--out",
        str(result),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert retrain.main(args) == 0
    report = json.loads((result / "metrics.json").read_text())
    assert [c["trial"] for c in report["candidates"]] == [c["trial"] for c in document["candidates"]]
    for candidate in report["candidates"]:
        assert candidate["validation"]["n"] == 2 and candidate["validation"]["ci95"] is not None
        assert len(candidate["test"]["macro_f1"]["values"]) == 2
        own_seed = document["candidates"][candidate["rank"] - 1]["config"]["seed"]
        assert candidate["seeds"] == [own_seed, own_seed + 1]
    winner = next(c for c in report["candidates"] if c["trial"] == report["winner"])
    assert winner["validation"]["mean"] == max(c["validation"]["mean"] for c in report["candidates"])
    model = AutoModelForSequenceClassification.from_pretrained(result / "model")
    assert model.config.num_hidden_layers == 2

    # Rerunning reads the finished seeds instead of training them again.
    stamps = {p: p.stat().st_mtime_ns for p in (result / "runs").iterdir()}
    assert retrain.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (result / "runs").iterdir()} == stamps


def test_retraining_with_the_trials_own_seed_reproduces_its_score(finished_study, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "best.json"
    assert export.main(["--study", "even-custom", "--storage", storage, "--out", str(out)]) == 0
    result = tmp_path / "again"
    assert (
        retrain.main(
            [
                "--config",
                str(out),
                "--seeds",
                "1",
                "--out",
                str(result),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((result / "metrics.json").read_text())
    reproduced = report["candidates"][0]["validation"]["mean"]
    assert abs(reproduced - finished_study.best_value) <= 0.005


def _study_with(values, direction="maximize"):
    study = optuna.create_study(direction=direction)
    for value in values:
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"lr": 0.1}, distributions={"lr": FloatDistribution(0.0, 1.0)},
                user_attrs={"config": {}},
            )
        )  # fmt: skip
    study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.99})
    )
    return study


@pytest.mark.parametrize(
    ("values", "direction", "order"),
    [
        ([0.5, 0.9, 0.7], "maximize", [1, 2, 0]),
        ([0.5, 0.9, 0.9], "maximize", [1, 2, 0]),
        ([0.5, 0.9, 0.7], "minimize", [0, 2, 1]),
    ],
)
def test_top_k_ranking_uses_completed_trials_only(values, direction, order):
    assert [t.number for t in ranked_trials(_study_with(values, direction))] == order


def _result(trial, vals, failed=()):
    return {"trial": trial, "failed_seeds": list(failed), "validation": mean_ci(vals)}


def test_the_winner_is_the_best_mean_not_the_luckiest_seed():
    lucky = _result(1, [0.95, 0.60, 0.62])
    steady = _result(2, [0.80, 0.81, 0.79])
    assert pick_winner([lucky, steady], maximize=True)["trial"] == 2
    assert pick_winner([_result(3, [0.9, 0.9], failed=[7]), steady], maximize=True)["trial"] == 2
    assert pick_winner([_result(4, [0.3, 0.3]), _result(5, [0.2, 0.25])], maximize=False)["trial"] == 5


def test_mean_ci_is_the_student_t_interval():
    summary = mean_ci([0.80, 0.82, 0.84])
    assert summary["mean"] == pytest.approx(0.82)
    assert summary["ci95"] == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)
    assert mean_ci([0.7])["ci95"] is None


def _cli(module, *args, cwd):
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return result.returncode, result.stderr.strip().splitlines()


def test_export_errors_are_one_line_exit_2(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="empty", storage=storage)
    foreign = optuna.create_study(study_name="foreign", storage=storage)
    foreign.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    cases = [
        (
            ["--study", "foreign", "--storage", storage, "--out", "b.yaml"],
            "was not created by python -m search.run",
        ),
        (["--study", "nope", "--storage", storage, "--out", "b.yaml"], "no study 'nope'"),
        (["--study", "empty", "--storage", storage, "--out", "b.yaml"], "has no completed trial"),
        (
            ["--study", "empty", "--storage", storage, "--out", "b.yaml", "--top-k", "0"],
            "top_k (--top-k) must be at least 1",
        ),
    ]
    for args, message in cases:
        code, lines = _cli("search.export", *args, cwd=tmp_path)
        assert code == 2 and len(lines) == 1 and message in lines[0], lines


_CONFIG = {"method": "lora", "lr": 1e-3, "epochs": 2, "batch_size": 16, "seed": 0, "metric": "macro_f1",
           "data": {"dataset": "d"}, "teacher": {"name": "t"}}  # fmt: skip
_CANDIDATE = {"rank": 1, "trial": 0, "validation_score": 0.5, "config": _CONFIG}


def _without(table, *keys):
    return {key: value for key, value in table.items() if key not in keys}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "no study or metric field"),
        ({"study": "s", "metric": "macro_f1"}, "'candidates' must be a non-empty list"),
        ({"candidates": "trial 0"}, "'candidates' must be a non-empty list"),
        ({"candidates": ["trial 0"]}, "candidate 1 must be a table"),
        ({"candidates": [_without(_CANDIDATE, "config")]}, "candidate 1 has no config"),
        (
            {"candidates": [{**_CANDIDATE, "config": _without(_CONFIG, "lr", "epochs")}]},
            "config has no lr, epochs",
        ),
        ({"candidates": [{**_CANDIDATE, "config": _without(_CONFIG, "data")}]}, "config has no data.dataset"),
    ],
)
def test_an_incomplete_export_is_refused_not_filled_with_defaults(tmp_path, document, message):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"toxitune_export": 1, "study": "s", "metric": "macro_f1", **document}))
    if not document:
        path.write_text("toxitune_export: 1\n")
    with pytest.raises(ConfigError, match=message):
        read_document(path)


def test_retrain_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "other.yaml").write_text("lr: 0.1\n")
    (tmp_path / "string.yaml").write_text(
        "toxitune_export: 1\nstudy: s\nmetric: macro_f1\ncandidates: trial 0\n"
    )
    cases = [
        (["--config", "missing.yaml", "--out", "o"], "file not found"),
        (["--config", "string.yaml", "--out", "o"], "'candidates' must be a non-empty list"),
        (["--config", "other.yaml", "--out", "o"], "not a toxitune export"),
        (["--config", "other.yaml", "--out", "o", "--seeds", "0"], "seeds (--seeds) must be at least 1"),
    ]
    for args, message in cases:
        code, lines = _cli("search.train", *args, cwd=tmp_path)
        assert code == 2 and len(lines) == 1 and message in lines[0], lines


def test_a_winner_that_collapsed_exits_1_and_ships_no_model(
    make_config, checkpoint_with_head, tmp_path, capsys
):
    head = checkpoint_with_head(0.0, [50.0, -50.0])
    config = make_config("teacher", teacher={"name": str(head)}, lr=1e-9, patience=0).to_dict()
    path = tmp_path / "best.yaml"
    candidate = {**_CANDIDATE, "config": config}
    path.write_text(
        yaml.safe_dump({"toxitune_export": 1, "study": "s", "metric": "macro_f1", "candidates": [candidate]})
    )
    out = tmp_path / "retrained"
    args = [
        "--config",
        str(path),
        "--seeds",
        "1",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert retrain.main(args) == 1
    assert "failed on seed 0 collapsed; no model was written" in capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    assert report["candidates"][0]["failed_seeds"] == [0] and not (out / "model").exists()


def test_exporting_from_a_missing_database_creates_nothing(tmp_path):
    code, lines = _cli("search.export", "--study", "unknown", "--out", "best.yaml", cwd=tmp_path)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: no database toxitune.db"), lines
    assert list(tmp_path.iterdir()) == []

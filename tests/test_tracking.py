"""W&B tracking in offline mode, read back from the run files; nothing goes to the network."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from wandb_runs import Run, find_runs, read_run

from search.export import export_study
from search.objective import Objective
from search.tracking import StudyTracker, WandbSettings, resolve_mode
from studies.spaces import FloatRange
from trainers.errors import ConfigError
from trainers.evaluate import Metrics
from trainers.loop import EvalRecord
from trainers.prepare import prepare_task

WARNING = "warning: W&B tracking off: "


@pytest.fixture(autouse=True)
def no_wandb_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def tracker(tmp_path: Path, mode: str = "offline", project: str = "toxitune") -> StudyTracker:
    settings = WandbSettings(project=project, mode=mode, dir=tmp_path / "tracking")  # type: ignore[arg-type]
    return StudyTracker(settings, study_name="study-a", method="odd", tags=["smoke"])


def read_back(run_dir: Path) -> Run:
    """The run, once W&B's service has written all of it."""
    return read_run(run_dir)


def eval_record(step: int, epoch: float, macro_f1: float, train_loss: float) -> dict:
    validation = Metrics(
        loss=0.6,
        accuracy=0.7,
        precision=0.7,
        recall=0.7,
        weighted_f1=0.68,
        macro_f1=macro_f1,
        roc_auc=0.8,
        per_class={"toxic": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10}},
        confusion=[[5, 1], [2, 3]],
    )
    return EvalRecord(step, epoch, train_loss, 0.4, 0.2, 0.1, validation).to_dict()


def test_offline_trial_is_read_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tracker(tmp_path)
    params = {"lr": 3e-4, "temperature": 2.0}
    link = study.start_trial(3, {"method": "odd", "epochs": 4}, params)
    study.log_eval(eval_record(10, 1.0, macro_f1=0.5, train_loss=0.9))
    study.log_eval(eval_record(20, 2.0, macro_f1=0.75, train_loss=0.7))
    study.finish_trial("pruned", {"best_epoch": 2, "best_val_macro_f1": 0.75, "reason": None, "history": []})

    [run_dir] = find_runs(tmp_path / "tracking")
    run = read_back(run_dir)
    assert link.path == f"toxitune/{run_dir.name.rsplit('-', 1)[-1]}"
    assert link.url is None, "an offline run has no page until wandb sync"
    assert (run.name, run.group, run.job_type, run.tags) == (
        "study-a-trial-3",
        "study-a",
        "odd",
        ("odd", "smoke"),
    )
    assert run.config == {"method": "odd", "epochs": 4, "trial_params": params, "trial_number": 3}
    assert [row["val/macro_f1"] for row in run.history] == [0.5, 0.75]
    assert [row["_step"] for row in run.history] == [10, 20]
    assert [row["train/loss"] for row in run.history] == [0.9, 0.7]
    assert {
        "train/cls",
        "train/div",
        "train/cos",
        "val/loss",
        "val/accuracy",
        "val/weighted_f1",
        "val/roc_auc",
        "epoch",
    } <= set(run.history[0])
    assert run.summary["state"] == "pruned"
    assert (run.summary["best_epoch"], run.summary["best_val_macro_f1"]) == (2, 0.75)
    assert "reason" not in run.summary and "history" not in run.summary
    assert run.exit_code == 0
    assert capsys.readouterr().err == ""


def test_each_trial_gets_its_own_run(tmp_path: Path) -> None:
    study = tracker(tmp_path)
    study.start_trial(0, {}, {"lr": 1e-4})
    study.finish_trial("complete", {"value": 0.8})
    study.start_trial(1, {}, {"lr": 1e-3})
    study.finish_trial("failed", {"reason": "out of memory"})

    runs = {run.name: run for run in map(read_back, find_runs(tmp_path / "tracking"))}
    assert {name: run.exit_code for name, run in runs.items()} == {"study-a-trial-0": 0, "study-a-trial-1": 1}
    assert runs["study-a-trial-1"].summary["reason"] == "out of memory"


def test_study_summary_table(tmp_path: Path) -> None:
    rows = [
        {"number": 0, "state": "complete", "value": 0.8, "lr": 1e-4},
        {"number": 1, "state": "pruned", "value": None, "lr": 3e-4, "temperature": 2.0},
    ]
    tracker(tmp_path).log_study(rows, best_value=0.8, best_trial=0)

    [run] = map(read_back, find_runs(tmp_path / "tracking"))
    assert (run.name, run.group, run.job_type) == ("study-a-summary", "study-a", "study-summary")
    assert (run.summary["best_value"], run.summary["best_trial"], run.summary["n_trials"]) == (0.8, 0, 2)
    assert run.table("trials") == [{**rows[0], "temperature": None}, rows[1]]


@pytest.mark.parametrize(
    ("mode", "env", "netrc", "expected"),
    [
        (None, {}, None, "offline"),
        (None, {"WANDB_API_KEY": "k" * 40}, None, "online"),
        (None, {}, "machine api.wandb.ai login user password secret", "online"),
        (None, {}, "machine wandb.example.com login user password secret", "offline"),
        (
            None,
            {"WANDB_BASE_URL": "https://wandb.example.com"},
            "machine wandb.example.com password p",
            "online",
        ),
        (None, {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k" * 40}, None, "disabled"),
        (None, {"WANDB_MODE": "dryrun"}, None, "offline"),
        ("offline", {"WANDB_API_KEY": "k" * 40}, None, "offline"),
        ("online", {"WANDB_MODE": "offline"}, None, "online"),
        ("disabled", {"WANDB_API_KEY": "k" * 40}, None, "disabled"),
    ],
)
def test_resolve_mode(
    mode: str | None,
    env: dict[str, str],
    netrc: str | None,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if netrc is not None:
        (tmp_path / "netrc").write_text(netrc + "\n")
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_mode(mode) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [("mode", "dryrun"), ("project", "")])
def test_settings_are_validated(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match="but got"):
        WandbSettings(**{field: value})  # type: ignore[arg-type]


def test_disabled_is_a_no_op_without_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb now fails
    study = tracker(tmp_path, mode="disabled")
    study.start_trial(0, {}, {})
    study.log_eval(eval_record(1, 1.0, macro_f1=0.5, train_loss=0.9))
    study.finish_trial("complete", {"value": 0.5})
    study.log_study([{"number": 0}], best_value=0.5)

    assert not study.enabled
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("project", "importable"), [("bad/project", True), ("toxitune", False)])
def test_wandb_error_warns_once_and_turns_tracking_off(
    project: str,
    importable: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not importable:
        monkeypatch.setitem(sys.modules, "wandb", None)
    study = tracker(tmp_path, project=project)  # W&B rejects project names with "/"
    study.start_trial(0, {}, {})
    study.log_eval(eval_record(1, 1.0, macro_f1=0.5, train_loss=0.9))
    study.finish_trial("complete", {"value": 0.5})
    study.start_trial(1, {}, {})
    study.log_study([{"number": 0}], best_value=0.5)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(WARNING), lines
    assert not study.enabled
    assert find_runs(tmp_path / "tracking") == []


def test_error_mid_trial_closes_its_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tracker(tmp_path)
    study.start_trial(0, {}, {})
    study.log_eval({"epoch": 1.0})  # no step
    study.finish_trial("complete", {"value": 0.5})

    assert capsys.readouterr().err.startswith(WARNING + "KeyError")
    [run] = map(read_back, find_runs(tmp_path / "tracking"))
    assert run.exit_code == 1 and "state" not in run.summary


@pytest.mark.parametrize(("method", "distills"), [("lora", False), ("odd", True)])
def test_a_trial_logs_and_exports_only_the_settings_its_method_uses(
    make_config, trained_checkpoint, cache_dir, tmp_path: Path, method: str, distills: bool
) -> None:
    base = make_config(method, epochs=1, teacher={"name": str(trained_checkpoint), "epochs": 1})
    task = prepare_task(base, cache_dir=cache_dir, progress=False)
    study = optuna.create_study(direction="maximize")
    space = {"lr": FloatRange(1e-4, 1e-2, log=True)}
    study.optimize(Objective(base, space, task, tracker(tmp_path), progress=False), n_trials=1)

    [run_dir] = find_runs(tmp_path / "tracking")
    logged = read_back(run_dir).config
    exported = export_study(study)["candidates"][0]["config"]
    for config in (logged, exported):
        assert ("loss" in config, "epochs" in config["teacher"]) == (distills, distills)
        assert ("lora" in config) != distills and config["teacher"]["name"] == base.teacher.name

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from wandb_runs import find_runs, read_run

import search.storage
from search.objective import Objective
from search.pruners import make_pruner, reports_within
from search.run import main
from search.study import _seeded_sampler, make_sampler, state_counts, trial_rows, trial_state
from studies.spaces import FloatRange, readable_params
from trainers.errors import ConfigError, DataError, ToxituneError
from trainers.prepare import prepare_task


class NullTracker:
    def __init__(self):
        self.events = []

    def start_trial(self, number, config, params):
        self.events.append(("start", number))

    def log_eval(self, record):
        self.events.append(("eval", record["step"]))

    def finish_trial(self, state, summary):
        self.events.append(("finish", state))


def _args(tiny_checkpoint, toy_data, tmp_path, *extra):
    return [
        "--dataset", str(toy_data), "--teacher", str(tiny_checkpoint), "--teacher-epochs", "10",
        "--teacher-lr", "3e-3", "--teacher-batch-size", "16", "--epochs", "2", "--max-length", "32", "--batch-size", "16",
        "--storage", f"sqlite:///{tmp_path}/study.db", "--cache-dir", str(tmp_path / "cache"),
        "--wandb-mode", "disabled", "--no-progress", *extra,
    ]  # fmt: skip


def _load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/study.db")


@pytest.mark.parametrize("method", ["odd", "even", "lora"])
def test_a_study_runs_end_to_end_for_each_method(trained_checkpoint, toy_data, tmp_path, method, capsys):
    args = _args(trained_checkpoint, toy_data, tmp_path)
    assert main(["--method", method, "--trials", "3", *args]) == 0
    study = _load(tmp_path, f"{method}-custom")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for trial in trials:
        assert trial.user_attrs["config"]["method"] == method
        assert trial.intermediate_values, "each trial reports its pruner's signal (ROC AUC by default)"
        evaluations = trial.user_attrs["evaluations"]
        assert len(evaluations) == len(trial.intermediate_values), "and keeps every evaluation's metrics"
        assert max(e[study.user_attrs["pruner_signal"]] for e in evaluations) == pytest.approx(
            max(trial.intermediate_values.values())
        )
    if method != "lora":
        weights = [trials[0].user_attrs[k] for k in ("w_cls", "w_div", "w_cos")]
        assert sum(weights) == pytest.approx(1.0)
        assert trials[0].user_attrs["config"]["loss"]["w_div"] == pytest.approx(weights[1])
    out = capsys.readouterr().out
    assert "best: trial" in out and "trials: " in out


def test_the_pruner_judges_roc_auc_for_an_f1_study_unless_told(trained_checkpoint, toy_data, tmp_path):
    args = _args(trained_checkpoint, toy_data, tmp_path, "--evals-per-epoch", "2")
    assert main(["--method", "lora", "--trials", "2", *args]) == 0
    study = _load(tmp_path, "lora-custom")
    assert study.user_attrs["pruner_signal"] == "roc_auc"
    for trial in study.trials:
        evaluations = trial.user_attrs["evaluations"]
        aucs = [e["roc_auc"] for e in evaluations]
        assert list(trial.intermediate_values.values()) == [max(aucs[: k + 1]) for k in range(len(aucs))]
        assert trial.value == max(e["macro_f1"] for e in evaluations), "the trial is still worth its metric"


def test_a_study_resumed_without_a_signal_keeps_the_one_it_was_created_with(
    trained_checkpoint, toy_data, tmp_path, monkeypatch
):
    opened = []

    class CountedStorage(optuna.storages.RDBStorage):
        def __init__(self, url, **kwargs):
            opened.append(url)
            super().__init__(url, **kwargs)

    monkeypatch.setattr(search.storage, "RDBStorage", CountedStorage)
    args = ["--method", "lora", "--study", "older", *_args(trained_checkpoint, toy_data, tmp_path)]
    assert main([*args, "--trials", "1", "--pruner-signal", "macro_f1"]) == 0
    assert main([*args, "--trials", "2"]) == 0
    assert len(opened) == 2, "each run opens its storage once, for the stored signal and the study alike"
    study = _load(tmp_path, "older")
    assert study.user_attrs["pruner_signal"] == "macro_f1" and len(study.trials) == 2
    evaluations = study.trials[1].user_attrs["evaluations"]
    f1s = [e["macro_f1"] for e in evaluations]
    assert list(study.trials[1].intermediate_values.values()) == [max(f1s[: k + 1]) for k in range(len(f1s))]


def test_rerunning_a_finished_study_runs_nothing(trained_checkpoint, toy_data, tmp_path, capsys):
    args = ["--method", "lora", "--trials", "2", *_args(trained_checkpoint, toy_data, tmp_path)]
    assert main(args) == 0
    assert main(args) == 0
    assert len(_load(tmp_path, "lora-custom").trials) == 2
    assert "2/2 trials finished" in capsys.readouterr().out
    assert main([*args[:3], "3", *args[4:]]) == 0, "a larger target adds the missing trials"
    assert len(_load(tmp_path, "lora-custom").trials) == 3


def test_a_deliberately_bad_trial_is_pruned(make_config, cache_dir):
    base = make_config("even", epochs=3, patience=0, collapse_warmup_epochs=99)
    task = prepare_task(base, cache_dir=cache_dir, progress=False)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for lr in (3e-3, 3e-3, 1.0):
        study.enqueue_trial({"lr": lr})
    tracker = NullTracker()
    objective = Objective(
        base=base, space={"lr": FloatRange(1e-5, 1.0, log=True)}, task=task, tracker=tracker, progress=False
    )
    study.optimize(objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert states[2] == TrialState.PRUNED and trial_state(study.trials[2]) == "pruned"
    assert len(study.trials[2].intermediate_values) == 1, "pruned at its first report"
    assert study.trials[2].user_attrs["reason"].startswith("MedianPruner pruned it at epoch 1.00")
    assert ("finish", "pruned") in tracker.events


def test_collapsed_and_diverged_trials_are_recorded_and_the_study_goes_on(
    checkpoint_with_head, toy_data, tmp_path, capsys
):
    one_class = checkpoint_with_head(0.0, [50.0, -50.0])
    nan = checkpoint_with_head(float("nan"), [0.0, 0.0])
    common = [
        "--method", "lora", "--trials", "2", "--pruner", "none",
        "--collapse-warmup-epochs", "1", "--collapse-min-steps", "0",
    ]  # fmt: skip
    # Every trial failed, so nothing can be exported: the command says so and exits 1.
    assert main([*common, "--study", "collapse", *_args(one_class, toy_data, tmp_path)]) == 1
    assert main([*common, "--study", "nan", *_args(nan, toy_data, tmp_path)]) == 1
    assert "error: no trial of study 'nan' completed" in capsys.readouterr().err
    for name, state, reason in (
        ("collapse", "collapsed", "every validation prediction"),
        ("nan", "diverged", "nan"),
    ):
        trials = _load(tmp_path, name).trials
        assert len(trials) == 2
        for trial in trials:
            assert trial.state == TrialState.PRUNED and trial_state(trial) == state
            assert trial.user_attrs["status"] == state and reason in trial.user_attrs["reason"]


def _run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "search.run", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs,
    )  # fmt: skip


def test_resume_after_sigkill_loses_and_repeats_no_trial(trained_checkpoint, toy_data, tmp_path):
    # Later flags win: six epochs make each trial long enough to be caught running.
    args = [
        "--method",
        "lora",
        "--trials",
        "4",
        "--pruner",
        "none",
        *_args(trained_checkpoint, toy_data, tmp_path),
        "--epochs",
        "6",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path}/study.db"
    deadline = time.monotonic() + 300
    before = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name="lora-custom", storage=storage).get_trials()
        except Exception:
            trials = []
        if any(t.state == TrialState.RUNNING and t.number >= 1 for t in trials):
            process.send_signal(signal.SIGKILL)
            process.wait()
            before = {t.number: t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
            break
        time.sleep(0.2)
    assert before is not None, "the study was killed mid-trial"

    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="lora-custom", storage=storage).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert [t.state for t in trials].count(TrialState.FAIL) == 1, "the killed trial ended FAIL"
    for number, trial in before.items():
        assert trials[number].params == trial.params and trials[number].value == trial.value
    assert "marked trials" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--method", "odd", "--trials", "2", "--teacher-ensemble", "0"],
            "teacher ensemble (--teacher-ensemble) must be at least 1, but got 0",
        ),
        (["--method", "odd", "--trials", "2", "--teacher-from", "nope"], "--teacher-from nope: "),
        (["--method", "lora", "--trials", "0"], "trials (--trials) must be at least 1, but got 0"),
        (["--method", "lora", "--trials", "2", "--preset", "nope"], "unknown preset 'nope'"),
        (["--method", "lora", "--trials", "2", "--storage", "mysql+nodriver://x"], "cannot open storage"),
        (["--method", "lora", "--trials", "2", "--storage", "just-a-name"], "is not a URL"),
        (["--method", "lora", "--trials", "2", "--pruner-warmup-epochs", "-1"], "must be >= 0, but got -1.0"),
        (
            ["--method", "lora", "--trials", "2", "--pruner-patience-epochs", "-1"],
            "must be >= 0, but got -1.0",
        ),
        (["--method", "lora", "--trials", "2", "--pruner-signal", "loss"], "improves the other way"),
        (
            ["--method", "lora", "--trials", "2", "--pruner-startup-trials", "0"],
            "pruner_startup_trials (--pruner-startup-trials) must be at least 1, but got 0",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = _run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(tmp_path.iterdir()), "a failed command creates no database"


def test_a_bad_data_path_creates_nothing_and_the_corrected_command_runs(
    trained_checkpoint, toy_data, tmp_path
):
    args = ["--method", "lora", "--trials", "1", *_args(trained_checkpoint, toy_data, tmp_path)]
    with pytest.raises(DataError, match="file not found"):
        main([*args, "--dataset", str(tmp_path / "missing.csv")])
    assert not (tmp_path / "study.db").exists()
    assert main(args) == 0, "no study was left pinned to the bad path"
    with pytest.raises(DataError, match="file not found"):
        main([*args, "--study", "other", "--dataset", str(tmp_path / "missing.csv")])
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db") == ["lora-custom"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"pytorch_model.bin": b"pickle"}, "only pickle weights \\(pytorch_model.bin\\)"),
        ({}, "no model.safetensors"),
    ],
)
def test_a_teacher_folder_without_safetensors_fails_before_any_trial(
    tiny_checkpoint, toy_data, tmp_path, files, message
):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_checkpoint, teacher)
    (teacher / "model.safetensors").unlink()
    for name, content in files.items():
        (teacher / name).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        main(["--method", "lora", "--trials", "3", *_args(teacher, toy_data, tmp_path)])
    assert not (tmp_path / "study.db").exists()


def test_ctrl_c_during_a_study_prints_one_line(tiny_checkpoint, toy_data, tmp_path):
    args = [
        "--method",
        "lora",
        "--trials",
        "3",
        *_args(tiny_checkpoint, toy_data, tmp_path),
        "--epochs",
        "30",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path}/study.db"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name="lora-custom", storage=storage).get_trials()
        except Exception:
            trials = []
        if any(t.state == TrialState.RUNNING for t in trials):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().splitlines() == [
        "interrupted; finished work is kept, run the same command again to resume"
    ], err


# A non-daemon thread that a Ctrl-C stranded, as when it lands inside Optuna's HeartbeatThread.__enter__.
_STRANDED_THREAD_MAIN = """
import threading
from trainers.cli import run_main

def main(argv):
    threading.Thread(target=threading.Event().wait).start()
    raise KeyboardInterrupt

run_main(main)
"""


def test_ctrl_c_exits_even_when_it_strands_a_worker_thread():
    done = subprocess.run(
        [sys.executable, "-c", _STRANDED_THREAD_MAIN], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130
    assert done.stderr.strip().splitlines() == [
        "interrupted; finished work is kept, run the same command again to resume"
    ], done.stderr


def test_postgres_storage_shares_one_study_between_two_workers(trained_checkpoint, toy_data, tmp_path):
    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        optuna.storages.RDBStorage(url)
    except Exception as error:
        pytest.skip(f"PostgreSQL not reachable: {error}")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    args = [
        "--method",
        "lora",
        "--trials",
        "4",
        "--study",
        name,
        *_args(trained_checkpoint, toy_data, tmp_path),
    ]
    args[args.index("--storage") + 1] = url
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "search.run", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]  # fmt: skip
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 4 <= len(finished) <= 5, "two workers may each start the last trial, never more"
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2, "both workers ran trials"
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert len({repr(sorted(t.params.items())) for t in finished}) == len(finished), "no trial drawn twice"
    assert state_counts(study)["failed"] == 0
    optuna.delete_study(study_name=name, storage=url)


def test_a_storage_password_is_never_printed_written_or_tracked(
    trained_checkpoint, toy_data, tmp_path, postgres_db
):
    url = postgres_db.replace("@", ":pw-s3cret@", 1)  # trust authentication takes any password
    wandb_dir = tmp_path / "wb"
    args = _args(
        trained_checkpoint, toy_data, tmp_path, "--wandb-mode", "offline", "--wandb-dir", str(wandb_dir)
    )
    args[args.index("--storage") + 1] = url
    study = _run_cli("--method", "lora", "--trials", "1", *args)
    assert study.returncode == 0, study.stderr
    out = tmp_path / "best.yaml"
    export = subprocess.run(
        [sys.executable, "-m", "search.export", "--study", "lora-custom", "--storage", url, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    shown = url.replace(":pw-s3cret@", ":***@")
    assert shown in study.stdout and yaml.safe_load(out.read_text())["storage"] == shown
    files = [out, *(path for path in wandb_dir.rglob("*") if path.is_file())]
    assert any(path.suffix == ".wandb" for path in files), "W&B kept its offline run there"
    leaks = [path for path in files if b"pw-s3cret" in path.read_bytes()]
    texts = [study.stdout, study.stderr, export.stdout, export.stderr]
    assert not leaks and not [text for text in texts if "pw-s3cret" in text], leaks


def _draw(study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> float:
    study.sampler = sampler
    trial = study.ask()
    value = trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, value)
    return value


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random"])
def test_samplers_are_seeded_from_their_first_trial_so_workers_never_share_draws(name):
    study = optuna.create_study(direction="maximize")
    first = _draw(study, make_sampler(name, seed=7))
    # A second worker that opened the study at the same time starts at trial 1, from seed 8.
    second = _draw(study, make_sampler(name, seed=7))
    assert second != first
    # A lone worker draws what a plain sampler with the study's seed draws, as before this wrapper.
    plain = optuna.create_study(direction="maximize")
    assert _draw(plain, _seeded_sampler(name, 7)) == first
    assert _draw(optuna.create_study(direction="maximize"), _seeded_sampler(name, 8)) == second


def test_tpe_models_the_study_after_its_startup_trials():
    def draws(startup_trials):
        study, sampler = optuna.create_study(direction="maximize"), make_sampler("tpe", 0, startup_trials)
        return [_draw(study, sampler) for _ in range(4)]

    random_start, modelled = draws(10), draws(2)
    assert modelled[:2] == random_start[:2]  # the same seeded random draws while TPE starts up
    assert modelled[2:] != random_start[2:]  # then its model, not the random stream


def test_every_trial_is_an_offline_wandb_run_with_its_metrics(tiny_checkpoint, toy_data, tmp_path):
    wandb_dir = tmp_path / "wb"
    args = _args(
        tiny_checkpoint, toy_data, tmp_path, "--wandb-mode", "offline", "--wandb-dir", str(wandb_dir)
    )
    assert main(["--method", "even", "--trials", "2", "--collapse-warmup-epochs", "99", *args]) == 0
    runs = [read_run(path) for path in find_runs(wandb_dir)]
    trials = sorted((r for r in runs if r.job_type == "even"), key=lambda r: r.name)
    assert [r.name for r in trials] == ["even-custom-trial-0", "even-custom-trial-1"]
    study = _load(tmp_path, "even-custom")
    for run, trial in zip(trials, study.trials, strict=True):
        assert run.group == "even-custom"
        # The loss weights, as the dashboards should plot them, not the simplex draws behind them.
        assert run.config["trial_params"] == readable_params(trial.params, trial.user_attrs)
        assert {"w_cls", "w_div", "w_cos"} <= run.config["trial_params"].keys()
        logged = [row["val/macro_f1"] for row in run.history if "val/macro_f1" in row]
        assert logged == pytest.approx(list(trial.intermediate_values.values()))
        assert run.summary["state"] == trial_state(trial)
    summary = next(r for r in runs if r.job_type == "study-summary")
    assert len(summary.table("trials")) == 2


def test_a_study_refuses_trials_with_other_fixed_settings(trained_checkpoint, toy_data, tmp_path):
    args = ["--method", "lora", "--trials", "1", *_args(trained_checkpoint, toy_data, tmp_path)]
    assert main(args) == 0
    with pytest.raises(ToxituneError, match=r"other base_config \(epochs was 2, now 3\)"):
        main([*args, "--trials", "2", "--epochs", "3"])


def test_a_study_stored_before_a_setting_was_added_resumes(trained_checkpoint, toy_data, tmp_path):
    args = ["--method", "lora", "--trials", "1", *_args(trained_checkpoint, toy_data, tmp_path)]
    assert main(args) == 0
    study = _load(tmp_path, "lora-custom")
    stored = study.user_attrs["base_config"]
    del stored["collapse_min_steps"]  # as a version without that setting stored it
    study.set_user_attr("base_config", stored)
    assert main([*args, "--trials", "2"]) == 0
    assert len(_load(tmp_path, "lora-custom").trials) == 2


def test_a_study_toxitune_did_not_create_is_left_alone(trained_checkpoint, toy_data, tmp_path):
    foreign = optuna.create_study(study_name="raw", storage=f"sqlite:///{tmp_path}/study.db")
    foreign.optimize(lambda trial: trial.suggest_float("lr", 0, 1), n_trials=2)
    args = [
        "--method",
        "lora",
        "--trials",
        "3",
        "--study",
        "raw",
        *_args(trained_checkpoint, toy_data, tmp_path),
    ]
    with pytest.raises(
        ToxituneError, match="study 'raw' in sqlite:///.*study.db was not created by toxitune"
    ):
        main(args)
    assert len(_load(tmp_path, "raw").trials) == 2

    # No trials and no attributes yet is what a second worker sees while the first creates the study:
    # the second joins it.
    optuna.create_study(study_name="racing", storage=f"sqlite:///{tmp_path}/study.db")
    racing = ["--method", "lora", "--trials", "1", "--study", "racing"]
    racing = [*racing, *_args(trained_checkpoint, toy_data, tmp_path)]
    assert main(racing) == 0
    assert _load(tmp_path, "racing").user_attrs["method"] == "lora"


def test_too_long_max_length_is_a_config_error(tiny_checkpoint, toy_data, tmp_path):
    args = [
        "--method",
        "lora",
        "--trials",
        "1",
        *_args(tiny_checkpoint, toy_data, tmp_path),
        "--max-length",
        "128",
    ]
    with pytest.raises(ConfigError, match="exceeds the 64 positions"):
        main(args)


@pytest.mark.parametrize(
    ("warmup_epochs", "evals_per_epoch", "reports"),
    [(0, 2, 0), (0.5, 2, 1), (1, 2, 2), (1, 3, 3), (0.4, 4, 2), (1 / 3, 3, 1)],
)
def test_reports_within_counts_the_reports_in_the_first_epochs(warmup_epochs, evals_per_epoch, reports):
    assert reports_within(warmup_epochs, evals_per_epoch) == reports


@pytest.mark.parametrize("name", ["median", "hyperband"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_the_pruner_judges_a_trial_only_after_its_warmup_reports(name, warmup):
    # A fixed name: Hyperband puts trials in brackets by hashing it, and brackets judge at different steps.
    pruner = make_pruner(name, evaluations=6, warmup=warmup)
    study = optuna.create_study(study_name="warm-up", direction="maximize", pruner=pruner)
    first_judged = []
    for value in [0.8] * 6 + [0.1] * 6:  # good trials past the start-up, then bad ones
        trial = study.ask()
        for step in range(1, 7):
            trial.report(value, step)
            if trial.should_prune():
                first_judged.append(step)
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    assert first_judged and min(first_judged) == warmup + 1


def test_a_pruned_trial_is_shown_with_its_metric_not_the_pruners_signal():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metric", "macro_f1")
    evaluations = [{"macro_f1": 0.40, "roc_auc": 0.61}, {"macro_f1": 0.52, "roc_auc": 0.64}]
    # Optuna stores a pruned trial's last report, here the ROC AUC its pruner judged, as its value.
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED, value=0.64, intermediate_values={1: 0.61, 2: 0.64},
            user_attrs={"evaluations": evaluations},
        )
    )  # fmt: skip
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"evaluations": evaluations}))
    assert [row["value"] for row in trial_rows(study)] == [0.52, 0.7], "a completed trial keeps its value"


@pytest.mark.parametrize("module", ["search.run", "search.train", "search.export", "trainers.train"])
@pytest.mark.parametrize("args", [["--help"], ["--trials", "many"]])
def test_help_and_argument_errors_load_no_torch(tmp_path, module, args):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == (0 if args == ["--help"] else 2)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert imported and not imported & {"torch", "transformers", "wandb"}


def test_intermediate_losses_a_searched_teacher_and_an_ensemble_run_export_and_retrain(
    trained_checkpoint, toy_data, tmp_path, capsys
):
    from search.export import main as export_main
    from search.train import main as train_main

    args = _args(trained_checkpoint, toy_data, tmp_path, "--epochs", "1")
    # The teacher's learning rate: the tiny student learns its two classes within the one epoch.
    weights = ["--w-hidden", "0.2", "--w-attn", "0.2", "--lr", "3e-3"]
    assert main(["--method", "odd", "--trials", "1", *weights, *args]) == 0
    trial = _load(tmp_path, "odd-custom").trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["config"]["loss"]["w_attn"] == 0.2
    assert list((tmp_path / "cache" / "teachers").glob("*/train_cls_states.pt"))

    # Weights drawn on the simplex, none set: the study still prepares the teacher's [CLS] states.
    drawn = tmp_path / "drawn.toml"
    drawn.write_text('[space."loss.weights"]\nsimplex = ["w_cls", "w_div", "w_cos", "w_hidden", "w_attn"]\n')
    drawn_study = [
        "--method", "odd", "--trials", "1", "--study", "drawn", "--preset", str(drawn), "--lr", "3e-3",
    ]  # fmt: skip
    assert main([*drawn_study, *args]) == 0
    trial = _load(tmp_path, "drawn").trials[0]
    assert trial.state == TrialState.COMPLETE
    assert (
        trial.user_attrs["config"]["loss"]["w_hidden"] > 0
        and trial.user_attrs["config"]["loss"]["w_attn"] > 0
    )

    assert main(["--method", "teacher", "--trials", "2", "--study", "teach", *args]) == 0
    teach = _load(tmp_path, "teach")
    assert {"lr", "warmup_ratio", "teacher.kind"} <= set(teach.trials[0].params)

    # A teacher study that cannot give what is asked of it is refused before anything is created.
    for bad, message in (
        (["--teacher-from", "teach", "--teacher-ensemble", "3"], "holds 2 finished teacher trial"),
        (["--teacher-from", "odd-custom"], "a odd study, not a single-objective teacher"),
    ):
        with pytest.raises(ToxituneError, match=message):
            main(["--method", "odd", "--trials", "1", "--study", "refused", *bad, *args])
    assert "refused" not in optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db")

    capsys.readouterr()
    ensemble = ["--teacher-from", "teach", "--teacher-ensemble", "2"]
    assert main(["--method", "odd", "--trials", "1", "--study", "ens", *ensemble, *args]) == 0
    assert "ensemble of 2 teachers: validation macro_f1" in capsys.readouterr().out
    config = _load(tmp_path, "ens").trials[0].user_attrs["config"]
    best = sorted(teach.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    assert (
        config["teacher"]["lr"] == best[0].params["lr"]
        and config["ensemble"][0]["lr"] == best[1].params["lr"]
    )
    assert config["teacher"]["ensemble"] == 2

    export = tmp_path / "ens.yaml"
    assert (
        export_main(["--study", "ens", "--storage", f"sqlite:///{tmp_path}/study.db", "--out", str(export)])
        == 0
    )
    exported = yaml.safe_load(export.read_text())["candidates"][0]["config"]
    assert exported["teacher"] == config["teacher"] and exported["ensemble"] == config["ensemble"]
    out = tmp_path / "retrained"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert (
        train_main(["--config", str(export), "--seeds", "1", "--out", str(out), "--no-progress", *cache]) == 0
    )
    teacher = yaml.safe_load((out / "metrics.json").read_text())["candidates"][0]["teacher"]
    assert len(teacher["members"]) == 2 and {"validation", "test"} <= set(teacher)
    assert len(list((tmp_path / "cache" / "ensembles").iterdir())) == 1, (
        "the retrain read the cached ensemble"
    )

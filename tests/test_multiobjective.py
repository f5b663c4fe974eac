"""Multi-objective studies: the front, the per-architecture latency cache, the shape space, bad input."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial
from wandb_runs import find_runs, read_run

from reports.compare import main as compare_main
from reports.study import write_report
from search.config import StudyConfig
from search.export import export_study
from search.objectives import (
    ARCHITECTURES,
    LATENCY_PROTOCOL,
    architecture_costs,
    architecture_key,
    pareto_front,
    resolve_objectives,
    shipped_cpu_model,
)
from search.run import main
from search.study import make_sampler, pareto_trials, trial_rows
from search.train import refront, retrain
from studies.spaces import BRANCH, DEPTH, LAYER_MAP, default_space, suggest
from trainers.config import LoraSettings, TrainConfig
from trainers.efficiency import LatencyProtocol
from trainers.errors import ToxituneError
from trainers.models import apply_lora, build_student, config_layers, load_classifier
from trainers.prepare import prepare_task

DIRECTIONS = ["maximize", "minimize"]


def _dominates(a: list[float], b: list[float]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere (maximise, minimise)."""
    signed_a, signed_b = (a[0], -a[1]), (b[0], -b[1])
    return all(x >= y for x, y in zip(signed_a, signed_b, strict=True)) and signed_a != signed_b


def test_the_front_is_exactly_the_non_dominated_set_of_the_stored_trials():
    study = optuna.create_study(directions=DIRECTIONS)
    study.set_user_attr("metric", "macro_f1")
    study.set_user_attr("objectives", ["macro_f1", "latency_ms"])
    generator = torch.Generator().manual_seed(0)
    # Few distinct values, so that ties and duplicate points occur.
    points = (torch.randint(0, 6, (40, 2), generator=generator).float() / 5).tolist()
    for f1, latency in points:
        study.add_trial(
            create_trial(
                values=[f1, latency],
                user_attrs={"value": f1, "config": {"method": "distil", "teacher": {"name": "t"}}},
            )
        )
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"status": "collapsed"}))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    expected = {t.number for t in complete if not any(_dominates(u.values, t.values) for u in complete)}
    assert 1 < len(expected) < len(complete)

    assert {t.number for t in pareto_trials(study)} == expected
    on_front = pareto_front([t.values for t in complete], DIRECTIONS)
    assert {t.number for t, on in zip(complete, on_front, strict=True) if on} == expected
    assert {row["trial"] for row in trial_rows(study) if row["pareto"]} == expected
    document = export_study(study, pareto=True)
    assert {c["trial"] for c in document["candidates"]} == expected
    scores = [c["validation_score"] for c in document["candidates"]]
    assert scores == sorted(scores, reverse=True), "the front is exported best metric first"
    assert all(
        c["objectives"] == dict(zip(["macro_f1", "latency_ms"], study.trials[c["trial"]].values, strict=True))
        for c in document["candidates"]
    )


def test_cached_latency_is_reused_across_trials_of_the_same_shape(make_config, cache_dir):
    config = make_config("distil")
    task = prepare_task(config, cache_dir=cache_dir, progress=False)
    teacher = load_classifier(task.teacher_checkpoint, task.label_names)
    study = optuna.create_study(directions=DIRECTIONS)
    protocol = LatencyProtocol(repeats=3, warmup=1, max_length=32)

    first = architecture_costs(study, build_student(teacher, [1, 2]), task, protocol)
    # Other layers and weights, same architecture: the stored figure, not a new (noisy) measurement.
    torch.manual_seed(1)
    other_weights = build_student(load_classifier(task.teacher_checkpoint, task.label_names), [3, 4])
    assert architecture_costs(study, other_weights, task, protocol) == first
    assert first["load"] >= 0  # the load average it was measured under, to tell busy figures apart
    study.set_user_attr(ARCHITECTURES, {first["architecture"]: {"latency_ms": 123.0, "params": 7}})
    assert architecture_costs(study, other_weights, task, protocol)["latency_ms"] == 123.0

    deeper = architecture_costs(study, build_student(teacher, [1, 2, 3]), task, protocol)
    assert deeper["architecture"] != first["architecture"] and deeper["params"] > first["params"]
    assert set(study.user_attrs[ARCHITECTURES]) == {first["architecture"], deeper["architecture"]}
    assert study.user_attrs[LATENCY_PROTOCOL]["batch_size"] == 1
    assert study.user_attrs[LATENCY_PROTOCOL]["threads"] == protocol.threads


def test_the_any_space_draws_a_method_then_only_its_branch_and_a_depth_only_where_the_map_takes_one():
    space = default_space("any", teacher_depth=4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []

    def objective(trial):
        drawn.append((suggest(trial, TrainConfig(method="distil"), space), dict(trial.params)))
        return 0.0

    study.optimize(objective, n_trials=40)
    methods = {config.method for config, _ in drawn}
    assert methods == {"distil", "lora"}
    for config, params in drawn:
        branches = {name.split(BRANCH)[0] for name in params if BRANCH in name}
        assert branches == {config.method}
        if config.method != "distil":
            continue
        depth_drawn = f"distil{BRANCH}{DEPTH}" in params
        assert config.student.layer_map == params[f"distil{BRANCH}{LAYER_MAP}"]
        assert depth_drawn == (config.student.layer_map not in ("odd", "even"))
        assert 1 <= len(config_layers(config, 4)) <= 3


def test_a_multi_objective_study_of_student_shapes_runs_and_exports_its_front(
    trained_checkpoint, toy_data, tmp_path, capsys
):
    storage = f"sqlite:///{tmp_path}/study.db"
    args = [
        "--method", "distil", "--objectives", "macro_f1,latency_ms,params", "--student-depth", "2",
        "--trials", "3", "--lr", "3e-3", "--dataset", str(toy_data), "--teacher", str(trained_checkpoint),
        "--teacher-epochs", "0", "--epochs", "2", "--max-length", "32", "--batch-size", "16",
        "--storage", storage, "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "--wandb-mode", "offline", "--wandb-dir", str(tmp_path / "wb"),
    ]  # fmt: skip
    assert main(args) == 0
    assert "runs with pruner none" in capsys.readouterr().err
    study = optuna.load_study(study_name="distil-custom", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    (architecture,) = study.user_attrs[ARCHITECTURES]  # a fixed depth leaves one shape
    figures = study.user_attrs[ARCHITECTURES][architecture]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for trial in complete:
        assert trial.values[1:] == [figures["latency_ms"], figures["params"]]
        config = TrainConfig.from_dict(trial.user_attrs["config"])
        assert trial.user_attrs["student_layers"] == list(config_layers(config, 4))
        assert config.student.depth == 2 and config.student.layer_map in ("first", "last", "spread")
    runs = [read_run(path) for path in find_runs(tmp_path / "wb")]
    by_name = {run.name: run for run in runs}
    for trial in complete:
        run = by_name[f"distil-custom-trial-{trial.number}"]
        logged = [run.summary[f"objective:{name}"] for name in ("macro_f1", "latency_ms", "params")]
        assert logged == pytest.approx(trial.values)
        assert run.config["student"] == trial.user_attrs["config"]["student"]
    table = next(run for run in runs if run.job_type == "study-summary").table("trials")
    front = {t.number for t in pareto_trials(study)}
    assert {row["trial"] for row in table if row["pareto"]} == front
    assert all("objective:latency_ms" in row for row in table)

    document = export_study(study, pareto=True)
    assert {c["trial"] for c in document["candidates"]} == front
    assert all(c["config"]["student"]["depth"] == 2 for c in document["candidates"])
    report = retrain(document, seeds=2, out=tmp_path / "front", cache_dir=tmp_path / "cache", progress=False)
    assert report["winner"] is None and set(report["front"]) | set(report["dropped"]) == {
        c["trial"] for c in document["candidates"]
    }
    assert (tmp_path / "front" / "metrics.json").is_file()

    written = write_report(study, tmp_path / "report")
    assert tmp_path / "report" / "pareto.png" in written
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"**Pareto front** of macro_f1, latency_ms, params: {len(pareto_trials(study))} trials" in summary
    assert compare_main(["--final", str(tmp_path / "front"), "--out", str(tmp_path / "compare")]) == 0
    assert (tmp_path / "compare" / "quality-latency.png").is_file()
    compared = (tmp_path / "compare" / "report.md").read_text()
    assert all(f"front trial {trial}" in compared for trial in report["front"] + report["dropped"])


def test_a_front_is_recomputed_on_the_seed_means_and_a_lucky_trial_drops_off():
    def result(trial, f1_means, latency):
        return {
            "trial": trial,
            "validation_means": {"macro_f1": f1_means} if f1_means is not None else None,
            "exported_objectives": {"macro_f1": 0.99, "latency_ms": latency},
        }

    # Trial 2 was on the study's front with one seed at 0.99; over seeds it is worse than trial 1
    # at a higher latency.
    results = [result(0, 0.70, 1.0), result(1, 0.85, 2.0), result(2, 0.80, 3.0), result(3, None, 0.5)]
    refront(results, ["macro_f1", "latency_ms"], DIRECTIONS)
    assert [r["pareto"] for r in results] == [True, True, False, False]
    assert results[1]["objectives"] == {"macro_f1": 0.85, "latency_ms": 2.0}, "metrics are the seed means"
    assert results[3]["objectives"] is None


@pytest.mark.parametrize(
    ("study", "expected", "notice"),
    [
        (
            StudyConfig(trials=1, objectives=("roc_auc",)),
            (None, "median", "roc_auc"),
            "single-objective study of roc_auc",
        ),
        (
            StudyConfig(trials=1, objectives=("latency_ms", "accuracy")),
            (("latency_ms", "accuracy"), "none", "accuracy"),
            "runs with pruner none",
        ),
        (
            StudyConfig(trials=1, objectives=("macro_f1", "params"), pruner="none"),
            (("macro_f1", "params"), "none", "macro_f1"),
            None,
        ),
        (StudyConfig(trials=1), (None, "median", "loss"), None),
    ],
)
def test_one_objective_is_a_single_objective_study_and_several_replace_the_pruner(
    study, expected, notice, capsys
):
    resolved, base = resolve_objectives(study, TrainConfig(method="lora", metric="loss"))
    assert (resolved.objectives, resolved.pruner, base.metric) == expected
    err = capsys.readouterr().err
    if notice is None:
        assert err == ""
    else:
        assert len(err.strip().splitlines()) == 1 and err.startswith("notice: ") and notice in err


def _cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objectives", "macro_f1,speed"], "unknown objective 'speed'"),
        (["--objectives", "macro_f1,latency_ms,macro_f1"], "names macro_f1 twice"),
        (["--objectives", "latency_ms,params"], "has no validation metric"),
        (["--objectives", "macro_f1,latency_ms", "--metric", "roc_auc"], "--metric roc_auc disagrees"),
        (
            ["--method", "distil", "--student-depth", "4"],
            "student depth must lie in 1..3 for a 4-layer teacher",
        ),
        (
            ["--method", "distil", "--preset", "PRESET"],
            "'student.depth' must lie in 1..3 for a 4-layer teacher",
        ),
        (["--method", "any", "--preset", "PRESET"], "'distil/student.depth' must lie in 1..3"),
        (["--method", "distil", "--student-layer-map", "odd", "--student-depth", "2"], "fixes the depth"),
    ],
)
def test_bad_objectives_and_depths_are_one_line_and_exit_2_before_any_training(
    tiny_checkpoint, tmp_path, args, message
):
    preset = tmp_path / "deep.toml"
    preset.write_text('[space."student.depth"]\nlow = 1\nhigh = 4\nint = true\n')
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = [str(preset) if arg == "PRESET" else arg for arg in args]
    method = [] if "--method" in args else ["--method", "lora"]
    result = _cli(
        "search.run", *method, *args, "--trials", "2", "--teacher", str(tiny_checkpoint), cwd=workdir
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(workdir.iterdir()), "nothing is left behind: no database, no cache"


@pytest.mark.parametrize("choice", [["--top-k", "2"], []])
def test_a_multi_objective_export_without_pareto_points_to_it(tmp_path, choice):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="mo", storage=storage, directions=DIRECTIONS)
    study.add_trial(create_trial(values=[0.8, 3.0], user_attrs={"config": {"teacher": {"name": "t"}}}))
    result = _cli(
        "search.export", "--study", "mo", "--storage", storage, "--out", "front.yaml", *choice, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --pareto" in lines[0], result.stderr
    assert not (tmp_path / "front.yaml").exists()


def test_a_single_objective_study_is_not_resumed_as_a_multi_objective_one(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="one", storage=storage, direction="maximize").set_user_attr(
        "method", "lora"
    )
    args = [
        "--method",
        "lora",
        "--trials",
        "1",
        "--study",
        "one",
        "--storage",
        storage,
        "--wandb-mode",
        "disabled",
    ]
    with pytest.raises(ToxituneError, match="has 1 objective\\(s\\), not 2"):
        main([*args, "--objectives", "macro_f1,latency_ms"])


def test_a_lora_model_costs_what_the_full_model_it_merges_into_costs(tiny_checkpoint):
    full = load_classifier(str(tiny_checkpoint), ("clean", "toxic"))
    lora = apply_lora(copy.deepcopy(full), LoraSettings(rank=4))
    shipped = shipped_cpu_model(lora)
    assert architecture_key(lora) == architecture_key(shipped) == architecture_key(full)
    assert sum(p.numel() for p in shipped.parameters()) == sum(p.numel() for p in full.parameters())
    assert architecture_key(build_student(full, [1])) != architecture_key(full)


@pytest.mark.parametrize(("name", "inner"), [("tpe", "TPESampler"), ("nsga2", "NSGAIISampler")])
def test_both_samplers_search_several_objectives(name, inner):
    sampler = make_sampler(name, seed=0)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    study.optimize(
        lambda trial: (trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)), n_trials=12
    )
    assert type(sampler._inner).__name__ == inner
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 12

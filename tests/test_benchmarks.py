from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.storage import open_storage
from trainers.errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the file executes.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def test_throughput_quick_run_writes_positive_figures(tiny_checkpoint, toy_data, tmp_path, monkeypatch):
    out = tmp_path / "throughput.json"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(tiny_checkpoint), "--max-length", "32",
        "--profile", "--repeat", "2", "--json", str(out),
    ]  # fmt: skip
    assert _load("throughput", monkeypatch).main(argv) == 0
    figures = json.loads(out.read_text())
    for runs in (figures["distillation"], figures["lora"]["runs"] | figures["lora"]):
        for loop in ("baseline", "toxitune"):
            assert len(runs["seconds_per_repeat"][loop]) == 2
    for loop in ("baseline", "toxitune"):  # the fastest pass is the one reported
        assert figures["distillation"][loop]["seconds"] == min(
            figures["distillation"]["seconds_per_repeat"][loop]
        )
    for key in ("baseline", "toxitune", "ratio", "logits_seconds"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    for key in ("baseline", "toxitune", "ratio"):
        assert math.isfinite(figures["lora"][key]) and figures["lora"][key] > 0
    runs = figures["distillation"]
    assert runs["baseline"]["steps"] == runs["toxitune"]["steps"] == 4  # 128 examples, batch 32
    assert runs["baseline"]["padded_tokens"] == 128 * 32 > runs["toxitune"]["padded_tokens"]
    profile = figures["profile"]
    assert len(profile["top_ops"]) > 0 and profile["matmul_gflops"] > 0
    assert 0 < profile["toxitune"]["achieved_pct"] and 0 < profile["baseline"]["achieved_pct"]
    assert all(
        math.isfinite(x) and x >= 0 for x in _numbers({k: v for k, v in figures.items() if k != "machine"})
    )


def test_pruning_quick_run_compares_both_pruners_and_resumes(
    tiny_checkpoint, toy_data, tmp_path, monkeypatch
):
    out, workdir = tmp_path / "pruning.json", tmp_path / "work"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(tiny_checkpoint), "--max-length", "32", "--workdir", str(workdir),
        "--json", str(out),
    ]  # fmt: skip
    pruning = _load("pruning", monkeypatch)
    assert pruning.main(argv) == 0
    first = json.loads(out.read_text())
    arms = ("median", "none", "none-unstopped")
    for name in arms:
        assert first[name]["trials"] == 6 and first[name]["steps"] > 0
        assert first[name]["examples"] >= first[name]["steps"] * 8  # the space's smallest batch
    assert first["none"]["pruned"] == first["none-unstopped"]["pruned"] == 0
    assert first["none-unstopped"]["early_stopped"] == 0
    assert first["none-unstopped"]["steps"] >= first["none"]["steps"]
    saved = first["median_vs_none"]["steps_saved"]
    assert set(first) >= {"median_vs_none", "median_vs_none-unstopped"}
    assert saved == pytest.approx(1 - first["median"]["steps"] / first["none"]["steps"])
    by_signal = first["replay_of_none"]
    # What the pruner judged (ROC AUC, by default for an F1 study), then the metric and loss from the evaluations.
    assert list(by_signal) == ["roc_auc", "macro_f1", "loss"]
    for replays in by_signal.values():
        assert list(replays) == ["2 reports/epoch", "1 reports/epoch"]  # --quick reports twice an epoch
        for by_setting in replays.values():
            assert {"median, warm-up 0 epochs", "hyperband, warm-up 0.5 epochs"} <= set(by_setting)
            # The same trials, some cut: never more steps, never a better best.
            for replay in by_setting.values():
                assert 0 <= replay["steps_saved"] < 1 and replay["f1_gain_points"] <= 0
    assert pruning.main(argv) == 0, "a rerun over the same workdir resumes: nothing left to run"
    again = json.loads(out.read_text())
    assert [again[n]["steps"] for n in arms] == [first[n]["steps"] for n in arms]


def test_pruning_with_a_fixed_batch_size_counts_examples_as_steps_times_batch(
    tiny_checkpoint, toy_data, tmp_path, monkeypatch
):
    out, workdir = tmp_path / "pruning.json", tmp_path / "work"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(tiny_checkpoint), "--max-length", "32",
        "--workdir", str(workdir), "--arms", "none", "--batch-size", "16", "--json", str(out),
    ]  # fmt: skip
    assert _load("pruning", monkeypatch).main(argv) == 0
    figures = json.loads(out.read_text())["none"]
    assert figures["examples"] == figures["steps"] * 16 > 0
    study = optuna.load_study(study_name="bench-none-seed0", storage=f"sqlite:///{workdir}/none-seed0.db")
    assert all(t.user_attrs["config"]["batch_size"] == 16 for t in study.trials)
    assert not any("batch_size" in t.params for t in study.trials), "a fixed setting leaves the space"


def test_pruning_rejects_a_batch_size_of_zero_instead_of_searching_it(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pruning.py"), "--batch-size", "0", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "batch_size must be positive, but got 0" in result.stderr


def test_quality_quick_run_scores_recipe_and_tuned_per_method(
    trained_checkpoint, toy_data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "quality.json"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(trained_checkpoint), "--max-length", "32",
        "--methods", "even,lora", "--top-k", "2",
        "--json", str(out),
    ]  # fmt: skip
    assert _load("quality", monkeypatch).main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"even", "lora"}
    for pair in results.values():
        for name in ("recipe", "tuned"):
            assert len(pair[name]["seeds"]) == 2
            assert 0 <= pair[name]["test"]["macro_f1"]["mean"] <= 1
        # The tuned config is the one of the study's two best with the best mean validation, as shipped.
        candidates = pair["tuned_candidates"]
        assert len({c["trial"] for c in candidates}) == 2
        assert pair["tuned"] == max(candidates, key=lambda c: c["validation"]["mean"])
    printed = capsys.readouterr().out
    assert "tuned beats recipe by >= 2 points for every method" in printed
    assert "tuned LoRA within 1 point of the best student (even)" in printed


def test_quality_jobs_spread_study_workers_and_seeds_over_processes_and_resume(
    trained_checkpoint, toy_data, tmp_path, monkeypatch, capsys
):
    workdir, out = tmp_path / "work", tmp_path / "quality.json"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(trained_checkpoint), "--max-length", "32",
        "--methods", "lora", "--trials", "4", "--workdir", str(workdir), "--json", str(out),
    ]  # fmt: skip
    quality = _load("quality", monkeypatch)
    assert quality.main([*argv, "--jobs", "2"]) == 0
    study = optuna.load_study(study_name="quality-lora", storage=open_storage(quality.study_storage(workdir)))
    finished = [t for t in study.trials if t.state.is_finished()]
    # --quick sets 2 trials; two workers may each start the last one, never more.
    assert 2 <= len(finished) <= 3
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == len(finished), "no draw twice"
    pair = json.loads(out.read_text())["results"]["lora"]
    for name in ("recipe", "tuned"):
        assert len(pair[name]["seeds"]) == 2 and pair[name]["model"] is None, "trained in workers, read here"
    reports = sorted(path.name for path in (workdir / "lora" / "recipe" / "runs").glob("*.json"))
    assert reports == ["trial-recipe-lora-seed-0.json", "trial-recipe-lora-seed-1.json"]
    capsys.readouterr()
    # A rerun reads every study and run it finds, trains nothing and prints the same figures.
    before = out.read_text()
    assert quality.main(argv) == 0
    assert "seed 0: " not in capsys.readouterr().out, "nothing retrained"
    assert json.loads(out.read_text())["results"] == json.loads(before)["results"]


def test_pruning_over_several_seeds_sums_steps_and_averages_best_f1(
    trained_checkpoint, toy_data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "pruning.json"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(trained_checkpoint), "--max-length", "32",
        "--workdir", str(tmp_path / "work"), "--arms", "median,none", "--seeds", "3,4", "--test-seeds", "1",
        "--test-top-k", "2", "--json", str(out),
    ]  # fmt: skip
    assert _load("pruning", monkeypatch).main(argv) == 0
    figures = json.loads(out.read_text())
    for name in ("median", "none"):
        seeds = figures[name]["seeds"]
        assert set(seeds) == {"3", "4"}
        assert figures[name]["steps"] == sum(s["steps"] for s in seeds.values()) > 0
        assert figures[name]["trials"] == sum(s["trials"] for s in seeds.values())
        for key in ("best_value", "test_macro_f1"):
            assert figures[name][key] == pytest.approx(sum(s[key] for s in seeds.values()) / 2)
        assert all(0 < s["test_macro_f1"] <= 1 for s in seeds.values())
    gain = (figures["median"]["test_macro_f1"] - figures["none"]["test_macro_f1"]) * 100
    assert figures["median_vs_none"]["test_f1_gain_points"] == pytest.approx(gain)
    for name in ("median", "none"):
        for seed, figures_of_seed in figures[name]["seeds"].items():
            folder = tmp_path / "work" / "retrained" / f"bench-{name}-seed{seed}" / "runs"
            runs = {
                int(path.name.split("-")[1]): json.loads(path.read_text()) for path in folder.glob("*.json")
            }
            assert len(runs) == 2, "the two best trials, one training seed each"
            # The scored trial is the best on validation over its training seeds, as search.train picks.
            chosen = runs[figures_of_seed["test_trial"]]
            assert chosen["validation"]["macro_f1"] == max(r["validation"]["macro_f1"] for r in runs.values())
            assert figures_of_seed["test_macro_f1"] == pytest.approx(chosen["test"]["macro_f1"])
    printed = capsys.readouterr().out
    assert "over 2 seeds, mean best F1" in printed and "by seed: 3:" in printed
    assert f"retrained on test, over 2 seeds, mean macro-F1 {gain:+.2f} points" in printed


def test_pruning_jobs_run_studies_and_retraining_in_parallel_to_the_same_figures(
    tiny_checkpoint, toy_data, tmp_path, monkeypatch
):
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(tiny_checkpoint), "--max-length", "32",
        "--arms", "median,none", "--seeds", "0,1", "--test-seeds", "1", "--trials", "4",
    ]  # fmt: skip
    pruning = _load("pruning", monkeypatch)
    figures = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}.json"
        assert (
            pruning.main(
                [*argv, "--jobs", str(jobs), "--workdir", str(tmp_path / f"jobs{jobs}"), "--json", str(out)]
            )
            == 0
        )
        figures[jobs] = json.loads(out.read_text())
    # One thread per process and one study per process: the figures are those of the sequential run.
    for name in ("median", "none"):
        for seed in ("0", "1"):
            sequential, parallel = figures[1][name]["seeds"][seed], figures[2][name]["seeds"][seed]
            for key in ("steps", "trials", "pruned", "best_value", "test_trial", "test_macro_f1"):
                assert parallel[key] == sequential[key], (name, seed, key)


def test_an_error_in_a_worker_cancels_queued_work_and_stops_only_the_pools_workers():
    import multiprocessing
    import operator
    import time

    from benchmarks.common import wait_all, worker_pool

    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    bystander.start()
    try:
        with pytest.raises(ZeroDivisionError), worker_pool(2) as pool:
            wait_all([pool.submit(operator.truediv, 1, 0), *(pool.submit(time.sleep, 60) for _ in range(3))])
        # The sleep running beside the error was stopped, not left to finish: no worker is alive, and
        # the process the caller started itself was left alone.
        assert multiprocessing.active_children() == [bystander]
    finally:
        bystander.terminate()
        bystander.join()


@pytest.mark.parametrize(
    ("script", "flag", "value"),
    [
        ("pruning", "--seeds", "1,x"),
        ("pruning", "--seeds", "2,2"),
        ("pruning", "--test-seeds", "-1"),
        ("pruning", "--test-top-k", "0"),
        ("pruning", "--pruner-startup-trials", "0"),
        ("quality", "--top-k", "0"),
        ("quality", "--jobs", "0"),
        ("pruning", "--jobs", "0"),
    ],
)
def test_benchmarks_reject_bad_flags_in_one_line(script, flag, value, tmp_path):
    script = BENCHMARKS / f"{script}.py"
    result = subprocess.run(
        [sys.executable, str(script), flag, value, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and flag in result.stderr


def test_serve_quick_run_answers_every_request(trained_checkpoint, toy_data, tmp_path, monkeypatch):
    out = tmp_path / "serve.json"
    argv = [
        "--model", str(trained_checkpoint), "--data", str(toy_data), "--requests", "24", "--seconds", "60",
        "--concurrency", "1,4", "--json", str(out),
    ]  # fmt: skip
    assert _load("serve", monkeypatch).main(argv) == 0
    levels = json.loads(out.read_text())[str(trained_checkpoint)]
    assert [level["clients"] for level in levels] == [1, 4]
    for level in levels:
        assert (level["answered"], level["errors"]) == (24, 0)
        assert 0 < level["p50_ms"] <= level["p95_ms"] and level["requests_per_second"] > 0


def test_peer_quick_run_compares_toxitune_with_both_peer_configurations(
    trained_checkpoint, toy_data, tmp_path, monkeypatch, capsys
):
    out, workdir = tmp_path / "peer.json", tmp_path / "work"
    argv = [
        "--quick", "--data", str(toy_data), "--teacher", str(trained_checkpoint), "--max-length", "32",
        "--out", str(workdir), "--json", str(out),
    ]  # fmt: skip
    peer = _load("peer", monkeypatch)
    assert peer.main(argv) == 0
    figures = json.loads(out.read_text())
    assert set(figures["arms"]) == {"toxitune", "docs", "tuned"}
    for name, arm in figures["arms"].items():
        assert list(arm["seeds"]) == ["0"], name
        run = arm["seeds"]["0"]
        assert run["trials"] == 2 and len(run["per_trial"]) == 2, name
        assert run["search_seconds"] > 0 and run["retrain_seconds"] > 0, name
        assert run["steps"] > 0 and run["examples"] >= run["steps"] * 16, name  # the space's smallest batch
        assert 0 <= run["best_value"] <= 1 and 0 <= run["test_macro_f1"] <= 1, name
        assert 0 <= run["one_class_complete"] <= run["one_class"] <= run["trials"], name
        # One point per finished trial, in time order, the best so far never falling, ending at the best.
        seconds = [s for s, _ in run["curve"]]
        assert len(seconds) == 2 and seconds == sorted(seconds) and 0 < seconds[0] <= run["search_seconds"]
        bests = [b for _, b in run["curve"] if b is not None]
        assert bests == sorted(bests) and bests[-1] == run["best_value"], name
    for name in ("docs", "tuned"):  # the peer's LoRA settings come from the trial, through model_init
        for trial in figures["arms"][name]["seeds"]["0"]["per_trial"]:
            assert {"lora_r", "lora_alpha", "learning_rate", "warmup_steps"} <= set(trial["params"])
            # The drawn warm-up ratio reached the arguments as a ratio, not cast to 0 steps.
            assert trial["applied"]["warmup_steps"] == pytest.approx(trial["params"]["warmup_steps"])
            assert trial["applied"]["learning_rate"] == pytest.approx(trial["params"]["learning_rate"])
    assert 1e-6 <= figures["arms"]["docs"]["seeds"]["0"]["per_trial"][0]["params"]["learning_rate"] <= 1e-4
    assert 1e-4 <= figures["arms"]["tuned"]["seeds"]["0"]["per_trial"][0]["params"]["learning_rate"] <= 3e-3
    goal = figures["targets"]["toxitune"]
    assert goal["peer"] == "tuned" and goal["peer_best_value"] == figures["arms"]["tuned"]["best_value"]
    assert figures["differences"] and "load_average" in figures["machine"]
    # The data both tools read are the written files: a toxitune rerun alone reuses the stored peer.
    assert sorted(p.name for p in (workdir / "data").iterdir()) == ["test.csv", "train.csv", "validation.csv"]
    capsys.readouterr()
    assert peer.main([*argv, "--configs", "toxitune"]) == 0
    printed = capsys.readouterr().out
    assert "toxitune, sampler seed 0: running" in printed and "tuned, sampler seed 0: running" not in printed
    again = json.loads(out.read_text())
    assert again["arms"]["tuned"] == figures["arms"]["tuned"]
    # A preset's run is its own arm, shown beside the stored plain one, its settings applied; its space
    # also makes a peer drawing from it, against which the preset's arm is judged.
    preset = tmp_path / "levers.toml"
    preset.write_text(
        "[config]\ncollapse_min_steps = 0\n[study]\nsampler_startup_trials = 1\n"
        "[space.lr]\nlow = 5e-4\nhigh = 6e-4\n"
    )
    assert peer.main([*argv, "--configs", "toxitune,tuned", "--preset", str(preset)]) == 0
    levers = json.loads(out.read_text())
    assert set(levers["arms"]) == {"toxitune", "toxitune+levers", "docs", "tuned", "tuned+levers"}
    assert levers["arms"]["toxitune"] == again["arms"]["toxitune"]
    assert levers["arms"]["tuned"] == figures["arms"]["tuned"]
    for name, key in (("toxitune+levers", "lr"), ("tuned+levers", "learning_rate")):
        assert all(5e-4 <= t["params"][key] <= 6e-4 for t in levers["arms"][name]["seeds"]["0"]["per_trial"])
    assert set(levers["targets"]) == {"toxitune", "toxitune+levers"}
    assert levers["targets"]["toxitune+levers"]["peer"] == "tuned+levers"
    assert levers["targets"]["toxitune"]["peer"] == "tuned"
    study = optuna.load_study(
        study_name="toxitune+levers-seed0", storage=f"sqlite:///{workdir}/toxitune+levers-seed0.db"
    )
    assert study.user_attrs["study_config"]["sampler_startup_trials"] == 1
    assert all(t.user_attrs["config"]["collapse_min_steps"] == 0 for t in study.trials)


def test_peer_refuses_a_preset_space_its_peer_cannot_draw_before_writing(tmp_path, monkeypatch):
    preset = tmp_path / "weights.toml"
    preset.write_text('[space."loss.temperature"]\nlow = 1.0\nhigh = 4.0\n')
    workdir = tmp_path / "work"
    peer = _load("peer", monkeypatch)
    argv = ["--quick", "--out", str(workdir), "--configs", "tuned", "--preset", str(preset)]
    with pytest.raises(ConfigError, match="mirrors LoRA's space only.*loss.temperature"):
        peer.main(argv)
    assert not workdir.exists()

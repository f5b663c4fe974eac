from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from trainers.train import main


def _common(tiny_checkpoint, toy_data, cache_dir):
    return [
        "--dataset", str(toy_data), "--teacher", str(tiny_checkpoint), "--teacher-epochs", "10",
        "--teacher-lr", "3e-3", "--teacher-batch-size", "16", "--batch-size", "16", "--lr", "3e-3",
        "--epochs", "2", "--collapse-warmup-epochs", "99", "--max-length", "32", "--cache-dir", str(cache_dir), "--no-progress",
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["even", "lora"])
def test_train_writes_metrics_and_a_loadable_model(trained_checkpoint, toy_data, cache_dir, tmp_path, method):
    out = tmp_path / "run"
    code = main(["--method", method, "--out", str(out), *_common(trained_checkpoint, toy_data, cache_dir)])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] in ("completed", "early_stopped")
    assert report["label_names"] == ["0", "1"]
    assert len(report["history"]) >= 1 and report["best"]["epoch"] >= 1
    assert {"accuracy", "precision", "recall", "weighted_f1", "macro_f1", "per_class"} <= set(report["test"])
    assert sum(map(sum, report["confusion_matrix"])) == 48
    assert report["config"]["method"] == method
    assert report["device"]["precision"] in ("no", "bf16", "fp16")
    assert (report["teacher"] is not None) == (method == "even")

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == (2 if method == "even" else 4)
    assert not any("lora" in name for name, _ in model.named_parameters())
    batch = tokenizer(["you are dumb", "nice day"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)


def test_label_names_name_the_saved_models_classes(trained_checkpoint, toy_data, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--method", "lora", "--epochs", "1", "--label-names", "clean,toxic", "--out", str(out)]
    assert main([*_common(trained_checkpoint, toy_data, cache_dir), *args]) == 0
    assert json.loads((out / "metrics.json").read_text())["label_names"] == ["clean", "toxic"]
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "clean", "1": "toxic"}


def test_a_diverged_run_exits_1_and_still_writes_its_report(
    checkpoint_with_head, toy_data, cache_dir, tmp_path
):
    out = tmp_path / "run"
    args = _common(checkpoint_with_head(float("nan"), [0.0, 0.0]), toy_data, cache_dir)
    assert main(["--method", "teacher", "--out", str(out), *args]) == 1
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] == "diverged" and "nan" in report["reason"]
    assert report["test"] is None and not (out / "model").exists()


def test_a_run_that_ends_predicting_one_class_is_collapsed_not_completed(
    checkpoint_with_head, toy_data, cache_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    args = _common(checkpoint_with_head(0.0, [50.0, -50.0]), toy_data, cache_dir)
    assert main(["--method", "teacher", "--out", str(out), *args, "--lr", "1e-9"]) == 1
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] == "collapsed" and "every validation prediction is class 0" in report["reason"]
    assert "teacher: collapsed" in capsys.readouterr().out


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "trainers.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "bogus"], "invalid choice: 'bogus'"),
        (["--dataset", "MISSING.csv"], "MISSING.csv: file not found"),
        (["--epochs", "0"], "epochs must be positive, but got 0"),
        (["--lr", "fast"], "invalid float value: 'fast'"),
        (
            ["--teacher", "/no/such/checkpoint", "--dataset", "TOY"],
            "--teacher /no/such/checkpoint: no such folder",
        ),
        (
            ["--dataset", "TOY", "--label-names", "a,b,c"],
            "--label-names a,b,c gives 3 names for the 2 classes (0,1)",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, toy_data, args, message):
    result = _run("--out", str(tmp_path / "out"), *[str(toy_data) if a == "TOY" else a for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("precision", "message"),
    [("fp32", "ACCELERATE_MIXED_PRECISION='fp32' is not a precision"), ("fp16", "fp16 needs a GPU")],
)
def test_a_bad_precision_is_one_line_and_exit_code_2(tmp_path, precision, message):
    result = _run("--out", str(tmp_path / "out"), env={"ACCELERATE_MIXED_PRECISION": precision})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_cuda_graphs_without_a_gpu_is_one_line_and_exit_code_2(tmp_path):
    result = _run("--out", str(tmp_path / "out"), env={"TOXITUNE_CUDA_GRAPHS": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TOXITUNE_CUDA_GRAPHS=1 needs a GPU" in lines[0], result.stderr


def test_accelerates_precision_variable_chooses_bf16_autocast(
    trained_checkpoint, toy_data, cache_dir, tmp_path
):
    # A process of its own: accelerate keeps one precision per process.
    out = tmp_path / "run"
    args = ["--method", "lora", "--out", str(out), *_common(trained_checkpoint, toy_data, cache_dir)]
    result = _run(*args, env={"ACCELERATE_MIXED_PRECISION": "bf16"})
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["device"]["precision"] == "bf16" and report["test"]["macro_f1"] > 0
    # The accelerator the loop trains with takes it too, not only the report.
    accelerator = subprocess.run(
        [sys.executable, "-c", "from trainers.device import make_accelerator; print(make_accelerator().mixed_precision)"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16"},
    )  # fmt: skip
    assert accelerator.stdout.strip() == "bf16", accelerator.stderr

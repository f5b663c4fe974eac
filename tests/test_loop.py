from __future__ import annotations

import math

import pytest
import torch

from trainers.cache import load_tensors, save_tensors
from trainers.errors import ConfigError
from trainers.evaluate import Metrics, evaluate_split
from trainers.loop import EarlyStopping, EvalRecord, Status, collapse_reason, evaluation_points, train
from trainers.prepare import prepare_task


@pytest.mark.parametrize(
    ("patience", "evals_per_epoch", "maximize", "values", "stop_after"),
    [
        (2, 1, True, [0.5, 0.6, 0.6, 0.55], 4),  # equal is no improvement
        (2, 1, True, [0.5, 0.4, 0.7, 0.6, 0.65], 5),
        (1, 1, False, [1.0, 0.9, 0.95], 3),
        (3, 1, False, [1.0, 1.1, 1.2, 0.9, 1.0, 1.0, 1.0], 7),
        (0, 1, True, [0.9, 0.1, 0.1, 0.1, 0.1], None),  # patience 0 never stops
        (1, 2, True, [0.5, 0.6, 0.6, 0.55], 4),  # patience is in epochs: two evaluations here
        (1, 3, True, [0.5, 0.4, 0.4, 0.4, 0.4], 4),  # 1/3 + 1/3 + 1/3 sums to one epoch despite rounding
        (1.5, 2, False, [1.0, 1.0, 1.0, 1.0, 1.0], 4),
    ],
)
def test_early_stopping_table(patience, evals_per_epoch, maximize, values, stop_after):
    stopper = EarlyStopping(patience, maximize=maximize)
    stopped_at = None
    for i, value in enumerate(values, start=1):
        stopper.update(value, epoch=i / evals_per_epoch)
        if stopper.should_stop:
            stopped_at = i
            break
    assert stopped_at == stop_after
    assert stopper.best == (max if maximize else min)(values[: stopped_at or len(values)])


def _record(confusion, train_cls):
    metrics = Metrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, {}, confusion)
    return EvalRecord(10, 1.0, train_cls, train_cls, 0.0, 0.0, metrics)


@pytest.mark.parametrize(
    ("confusion", "train_cls", "collapsed"),
    [
        ([[5, 0], [3, 0]], 0.3, "every validation prediction is class 0"),
        ([[0, 5], [0, 3]], 0.3, "every validation prediction is class 1"),
        ([[4, 1], [1, 2]], math.log(2) + 0.001, "stuck at ln(2)"),
        ([[4, 1], [1, 2]], math.log(2) - 0.05, None),
        ([[4, 1, 0], [1, 2, 0], [0, 0, 3]], math.log(3), "stuck at ln(3)"),
        ([[4, 1, 0], [1, 2, 0], [0, 0, 3]], 0.5, None),
    ],
)
def test_collapse_reason_table(confusion, train_cls, collapsed):
    reason = collapse_reason(_record(confusion, train_cls), len(confusion))
    assert (reason is None) if collapsed is None else (collapsed in reason)


@pytest.fixture
def lora_task(make_config, cache_dir):
    return prepare_task(make_config("lora"), cache_dir=cache_dir, progress=False)


@pytest.fixture
def trained_lora_task(make_config, trained_checkpoint, cache_dir):
    """LoRA on a model that already tells the classes apart: it ends with both classes predicted."""
    config = make_config("lora", teacher={"name": str(trained_checkpoint)})
    return prepare_task(config, cache_dir=cache_dir, progress=False)


@pytest.mark.parametrize("method", ["teacher", "lora", "odd", "even"])
def test_each_method_trains_and_records_history(make_config, trained_checkpoint, cache_dir, method):
    config = make_config(method, teacher={"name": str(trained_checkpoint)}, epochs=2, patience=0)
    task = prepare_task(config, cache_dir=cache_dir, progress=False)
    result = train(config, task, progress=False)
    assert result.status is Status.COMPLETED
    assert [round(r.epoch, 6) for r in result.history] == [1.0, 2.0]
    assert result.steps == 2 * math.ceil(len(task.train) / 16)
    for record in result.history:
        assert math.isfinite(record.train_loss) and math.isfinite(record.validation.loss)
        if config.distills:
            assert record.train_div > 0 and record.train_cos > 0
        else:
            assert record.train_div == record.train_cos == 0
            assert record.train_loss == pytest.approx(record.train_cls)


def test_the_best_evaluation_is_kept_not_the_last(make_config, lora_task):
    config = make_config("lora", epochs=3, lr=5e-3, evals_per_epoch=12, patience=0, collapse_warmup_epochs=99)
    result = train(config, lora_task, progress=False)
    scores = [r.validation.macro_f1 for r in result.history]
    best = scores.index(max(scores))
    assert result.best is result.history[best]
    assert best != len(scores) - 1, "precondition: the last evaluation is not the best"
    again = evaluate_split(
        result.model, lora_task.validation, lora_task.label_names, pad_token_id=0, batch_size=32
    )
    assert again.loss == pytest.approx(result.best.validation.loss, rel=1e-5)
    assert again.loss != pytest.approx(result.history[-1].validation.loss, rel=1e-5)


def test_patience_stops_a_run_that_stopped_improving(make_config, trained_lora_task):
    # 12 steps an epoch, so an evaluation every 2 steps; half an epoch is 3 evaluations after the best.
    config = make_config("lora", epochs=5, lr=1e-9, evals_per_epoch=6, patience=0.5)
    result = train(config, trained_lora_task, progress=False)
    assert result.status is Status.EARLY_STOPPED
    assert len(result.history) == 4 and result.best is result.history[0]
    assert result.steps == 8


def test_the_callback_can_stop_a_run(make_config, lora_task):
    seen = []

    def stop_at_second(record):
        seen.append(record.step)
        return len(seen) == 2

    config = make_config("lora", epochs=5, evals_per_epoch=6, patience=0, collapse_warmup_epochs=99)
    result = train(config, lora_task, on_eval=stop_at_second, progress=False)
    assert result.status is Status.STOPPED
    assert seen == [2, 4] and result.steps == 4


@pytest.mark.parametrize(
    ("warmup_epochs", "min_steps", "evaluations"),
    [(1, 0, 1), (2, 0, 2), (1, 13, 2), (1, 36, 3)],  # 12 steps an epoch
)
def test_a_run_predicting_one_class_is_stopped_as_collapsed_after_both_warm_ups(
    make_config, checkpoint_with_head, cache_dir, warmup_epochs, min_steps, evaluations
):
    checkpoint = checkpoint_with_head(0.0, [50.0, -50.0])
    config = make_config(
        "teacher", teacher={"name": str(checkpoint)}, epochs=4, lr=1e-9,
        collapse_warmup_epochs=warmup_epochs, collapse_min_steps=min_steps,
    )  # fmt: skip
    result = train(config, prepare_task(config, cache_dir=cache_dir, progress=False), progress=False)
    assert result.status is Status.COLLAPSED
    assert "every validation prediction is class 0" in result.reason
    assert len(result.history) == evaluations, "stopped at the first evaluation after both warm-ups"


def test_a_short_run_whose_best_evaluation_predicts_one_class_ends_collapsed(
    make_config, checkpoint_with_head, cache_dir
):
    checkpoint = checkpoint_with_head(0.0, [50.0, -50.0])
    # 24 steps, far fewer than collapse_min_steps: too early for a verdict mid-run, never too early at the end.
    config = make_config(
        "teacher", teacher={"name": str(checkpoint)}, epochs=2, lr=1e-9, patience=0, collapse_min_steps=200
    )
    result = train(config, prepare_task(config, cache_dir=cache_dir, progress=False), progress=False)
    assert len(result.history) == 2, "the warm-ups still keep the run going"
    assert result.status is Status.COLLAPSED
    assert "best evaluation" in result.reason and "every validation prediction is class 0" in result.reason


def test_early_stopping_waits_while_a_run_has_not_left_one_class(
    make_config, checkpoint_with_head, cache_dir
):
    checkpoint = checkpoint_with_head(0.0, [50.0, -50.0])
    config = make_config(
        "teacher", teacher={"name": str(checkpoint)}, epochs=4, lr=1e-9, patience=1, collapse_warmup_epochs=99
    )
    result = train(config, prepare_task(config, cache_dir=cache_dir, progress=False), progress=False)
    assert len(result.history) == 4, "patience 1 would have stopped it at epoch 2"
    assert result.status is Status.COLLAPSED


@pytest.mark.parametrize(
    ("steps", "evals", "points"),
    [(12, 1, {12}), (12, 3, {4, 8, 12}), (10, 3, {3, 7, 10}), (2, 4, {1, 2}), (1, 1, {1})],
)
def test_evaluations_are_spread_evenly_and_end_the_epoch(steps, evals, points):
    assert evaluation_points(steps, evals) == points


def test_a_nan_loss_ends_the_run_as_diverged_without_raising(make_config, checkpoint_with_head, cache_dir):
    checkpoint = checkpoint_with_head(float("nan"), [0.0, 0.0])
    config = make_config("teacher", teacher={"name": str(checkpoint)})
    result = train(config, prepare_task(config, cache_dir=cache_dir, progress=False), progress=False)
    assert result.status is Status.DIVERGED
    assert "nan" in result.reason and result.best is None and result.history == []


def test_an_interrupted_run_continues_from_its_last_epoch(make_config, lora_task, tmp_path):
    config = make_config("lora", epochs=4, lr=5e-3, patience=0, collapse_warmup_epochs=99)
    whole = train(config, lora_task, progress=False)

    def interrupt_in_third_epoch(record):
        if record.epoch > 2:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train(config, lora_task, on_eval=interrupt_in_third_epoch, progress=False, checkpoint=checkpoint)
    resumed = train(config, lora_task, progress=False, checkpoint=checkpoint)
    assert resumed.steps == whole.steps
    assert [r.to_dict() for r in resumed.history] == [r.to_dict() for r in whole.history]
    assert resumed.best.step == whole.best.step
    for (name, a), (_, b) in zip(
        resumed.model.named_parameters(), whole.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name

    with pytest.raises(ConfigError, match="other settings"):
        train(make_config("lora", epochs=5), lora_task, progress=False, checkpoint=checkpoint)


def test_a_checkpoint_without_a_setting_added_since_still_resumes(make_config, lora_task, tmp_path):
    config = make_config("lora", epochs=2, patience=0, collapse_warmup_epochs=99)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train(config, lora_task, on_eval=_interrupt_after_first_epoch, progress=False, checkpoint=checkpoint)
    saved = load_tensors(checkpoint)
    del saved["config"]["collapse_min_steps"]  # as a version without that setting wrote it
    save_tensors(saved, checkpoint)
    evaluated = []
    resumed = train(config, lora_task, on_eval=evaluated.append, progress=False, checkpoint=checkpoint)
    assert [record.epoch for record in evaluated] == [2.0], "the first epoch was read back, not trained"
    assert len(resumed.history) == 2


def test_a_resumed_run_keeps_its_early_stopping_patience(make_config, trained_lora_task, tmp_path):
    # No learning, so the first evaluation stays best and patience ends the run at epoch 3.
    config = make_config("lora", epochs=5, lr=1e-9, patience=2)
    whole = train(config, trained_lora_task, progress=False)
    assert whole.status is Status.EARLY_STOPPED and len(whole.history) == 3

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train(
            config,
            trained_lora_task,
            on_eval=_interrupt_after_first_epoch,
            progress=False,
            checkpoint=checkpoint,
        )
    resumed = train(config, trained_lora_task, progress=False, checkpoint=checkpoint)
    assert resumed.status is Status.EARLY_STOPPED
    assert [r.to_dict() for r in resumed.history] == [r.to_dict() for r in whole.history]


def _with_stopper_field(saved: dict) -> dict:
    return {**saved, "stopper": (0.5, 0)}


def _without_roc_auc(saved: dict) -> dict:
    history = [
        {**r, "validation": {k: v for k, v in r["validation"].items() if k != "roc_auc"}}
        for r in saved["history"]
    ]
    return {**saved, "history": history}


@pytest.mark.parametrize("old_format", [_with_stopper_field, _without_roc_auc])
def test_a_checkpoint_from_another_version_is_a_config_error(make_config, lora_task, tmp_path, old_format):
    config = make_config("lora", epochs=2, patience=0, collapse_warmup_epochs=99)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train(config, lora_task, on_eval=_interrupt_after_first_epoch, progress=False, checkpoint=checkpoint)
    torch.save(old_format(torch.load(checkpoint, weights_only=True)), checkpoint)
    with pytest.raises(ConfigError, match="not a checkpoint toxitune wrote"):
        train(config, lora_task, progress=False, checkpoint=checkpoint)


def _interrupt_after_first_epoch(record):
    if record.epoch > 1:
        raise KeyboardInterrupt


def test_a_stop_request_at_the_last_evaluation_keeps_the_finished_run(make_config, trained_lora_task):
    config = make_config("lora", epochs=2, patience=0)
    result = train(config, trained_lora_task, on_eval=lambda record: record.epoch >= 2, progress=False)
    assert result.status is Status.COMPLETED and len(result.history) == 2

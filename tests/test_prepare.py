from __future__ import annotations

import dataclasses

import torch

import trainers.prepare
from trainers.cache import load_tensors
from trainers.config import TrainConfig
from trainers.evaluate import split_logits
from trainers.models import load_classifier
from trainers.prepare import prepare_task


def test_teacher_is_fine_tuned_once_and_its_logits_cached(make_config, cache_dir):
    config = make_config("even")
    task = prepare_task(config, cache_dir=cache_dir, progress=False)
    teacher_dir = task.teacher_checkpoint
    assert task.teacher_metrics["validation"]["macro_f1"] > 0.9, "the toy teacher learns its task"
    assert task.teacher_metrics["training"]["status"] in ("completed", "early_stopped")
    logits_file = f"{teacher_dir}/train_logits.pt"
    stamp = (load_tensors(logits_file).sum().item(), __import__("os").stat(logits_file).st_mtime_ns)

    teacher = load_classifier(teacher_dir, task.label_names)
    direct = split_logits(teacher, task.train, pad_token_id=0, batch_size=7)
    assert torch.allclose(task.teacher_logits, direct, atol=1e-5)

    odd = prepare_task(make_config("odd", lr=1e-4, batch_size=8), cache_dir=cache_dir, progress=False)
    assert odd.teacher_checkpoint == teacher_dir, "trial settings do not change the teacher"
    assert __import__("os").stat(logits_file).st_mtime_ns == stamp[1], "logits are read, not recomputed"
    assert torch.equal(odd.teacher_logits, task.teacher_logits)


def test_teacher_settings_and_data_change_the_cached_teacher(make_config, cache_dir):
    base = prepare_task(make_config("even"), cache_dir=cache_dir, progress=False)
    other_lr = prepare_task(make_config("even", teacher={"lr": 4e-3}), cache_dir=cache_dir, progress=False)
    other_data = prepare_task(
        make_config("even", data={"train_size": 180}), cache_dir=cache_dir, progress=False
    )
    assert len({base.teacher_checkpoint, other_lr.teacher_checkpoint, other_data.teacher_checkpoint}) == 3


def test_zero_teacher_epochs_keeps_a_seeded_untrained_head(make_config, tmp_path):
    config = make_config("even", teacher={"epochs": 0})
    first = prepare_task(config, cache_dir=tmp_path / "a", progress=False)
    second = prepare_task(config, cache_dir=tmp_path / "b", progress=False)
    assert first.teacher_metrics["training"]["status"] == "untrained"
    assert torch.equal(first.teacher_logits, second.teacher_logits)


def test_lora_and_teacher_tasks_need_no_teacher(make_config, cache_dir):
    task = prepare_task(make_config("lora"), cache_dir=cache_dir, progress=False)
    assert task.teacher_checkpoint is None and task.teacher_logits is None
    assert not (cache_dir / "teachers").exists()


def test_a_setting_added_to_the_config_keeps_the_cached_teacher(make_config, cache_dir, monkeypatch):
    config = make_config("even")
    teacher_dir = prepare_task(config, cache_dir=cache_dir, progress=False).teacher_checkpoint

    @dataclasses.dataclass(frozen=True)
    class WithNewSetting(TrainConfig):
        new_setting: int = 0

    # The teacher's settings are built as a TrainConfig: a later version's holds one more field.
    monkeypatch.setattr(trainers.prepare, "TrainConfig", WithNewSetting)
    assert prepare_task(config, cache_dir=cache_dir, progress=False).teacher_checkpoint == teacher_dir
    assert len(list((cache_dir / "teachers").glob("*/metrics.json"))) == 1


def test_a_teacher_set_as_before_keeps_its_cache_key():
    from types import SimpleNamespace

    from trainers.cache import fingerprint
    from trainers.config import TeacherConfig
    from trainers.prepare import teacher_key

    task = SimpleNamespace(splits=SimpleNamespace(fingerprint=lambda: "data-fp"))
    # The fingerprints of these configs before the teacher gained warm-up, weight decay, dropout,
    # kind, LoRA and ensemble settings: their cached teachers must still be found.
    old = TeacherConfig(name="x", epochs=4, lr=3e-4, batch_size=16, seed=2)
    assert fingerprint(teacher_key(TrainConfig(method="odd"), task)) == "4c5a4331ad9f069d"
    assert fingerprint(teacher_key(TrainConfig(method="even", teacher=old), task)) == "41f5a8c197caacaf"
    ensemble = dataclasses.replace(old, ensemble=3)
    assert fingerprint(teacher_key(TrainConfig(method="even", teacher=ensemble), task)) == "41f5a8c197caacaf"
    lora = dataclasses.replace(old, kind="lora")
    assert fingerprint(teacher_key(TrainConfig(method="even", teacher=lora), task)) != "41f5a8c197caacaf"
    dropped = dataclasses.replace(old, attention_dropout=0.2)
    assert fingerprint(teacher_key(TrainConfig(method="even", teacher=dropped), task)) != "41f5a8c197caacaf"


def test_a_lora_trial_as_teacher_keeps_both_dropouts():
    from trainers.prepare import teacher_config, teacher_of

    trial = TrainConfig(method="lora", lr=2e-3, hidden_dropout=0.05, attention_dropout=0.17)
    teacher = teacher_of(trial)
    assert (teacher.kind, teacher.hidden_dropout, teacher.attention_dropout) == ("lora", 0.05, 0.17)
    fine_tune = teacher_config(TrainConfig(method="odd", teacher=teacher))
    assert (fine_tune.lr, fine_tune.hidden_dropout, fine_tune.attention_dropout) == (2e-3, 0.05, 0.17)

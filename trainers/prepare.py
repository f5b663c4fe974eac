"""Building a :class:`~trainers.task.Task`: the work every run of a study shares, cached on disk."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from trainers.cache import fingerprint, load_tensors, locked, save_tensors
from trainers.config import TrainConfig
from trainers.data import encode_split, load_splits
from trainers.errors import ConfigError, ToxituneError
from trainers.evaluate import evaluate_split, split_logits
from trainers.loop import Status, train
from trainers.models import (
    check_checkpoint,
    load_classifier,
    load_model_config,
    load_tokenizer,
    resolve_checkpoint,
    save_classifier,
)
from trainers.task import Task


def prepare_task(config: TrainConfig, *, cache_dir: Path, progress: bool = True) -> Task:
    """Load and tokenise the data and, for distillation, fine-tune the teacher and cache its logits.

    Every expensive part is cached under ``cache_dir`` by a fingerprint of what determines it, so
    a second call, from this process or another, reuses it.

    Args:
        config: The run's settings; only data, teacher and (for the size check) batch size matter.
        cache_dir: Folder for tokens, fine-tuned teachers and teacher logits.
        progress: Show progress bars while fine-tuning the teacher.
    """
    splits = load_splits(config.data, batch_size=config.batch_size)
    check_checkpoint(config.teacher.name)
    tokenizer = load_tokenizer(config.teacher.name)
    positions = load_model_config(config.teacher.name).max_position_embeddings
    if config.data.max_length > positions:
        raise ConfigError(
            f"--max-length {config.data.max_length} exceeds the {positions} positions of {config.teacher.name}; lower it"
        )
    encoded = {
        name: encode_split(
            getattr(splits, name), tokenizer, max_length=config.data.max_length, cache_dir=cache_dir
        )
        for name in ("train", "validation", "test")
    }
    task = Task(
        splits=splits, tokenizer=tokenizer, base_checkpoint=resolve_checkpoint(config.teacher.name), **encoded
    )
    if not config.distills:
        return task
    teacher_dir = fine_tune_teacher(config, task, cache_dir=cache_dir, progress=progress)
    logits_path = teacher_dir / "train_logits.pt"
    with locked(logits_path):
        if not logits_path.exists():
            save_tensors(_teacher_train_logits(teacher_dir, task, config.eval_batch_size), logits_path)
    return dataclasses.replace(
        task,
        teacher_checkpoint=str(teacher_dir),
        teacher_logits=load_tensors(logits_path),
        teacher_metrics=json.loads((teacher_dir / "metrics.json").read_text()),
    )


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The settings the teacher is fine-tuned with: the study's fixed teacher settings, not a trial's."""
    teacher = config.teacher
    epochs = max(teacher.epochs, 1)
    return TrainConfig(
        method="teacher",
        data=config.data,
        teacher=teacher,
        epochs=epochs,
        lr=teacher.lr,
        batch_size=teacher.batch_size,
        seed=teacher.seed,
        # A teacher is judged by where it ends up, not by a slow start; its best epoch is kept.
        patience=0,
        collapse_warmup_epochs=epochs,
    )


# The training settings that shape a fine-tuned teacher. Listed, not read off the whole config, so that
# a setting added for students (a loss weight, say) keeps every cached teacher.
TEACHER_TRAINING = (
    "epochs", "lr", "batch_size", "seed", "weight_decay", "warmup_ratio", "max_grad_norm",
    "hidden_dropout", "attention_dropout", "metric", "patience", "evals_per_epoch",
)  # fmt: skip


def teacher_key(config: TrainConfig, task: Task) -> dict[str, Any]:
    """What decides the teacher that ``config`` distils from on ``task``: the cache key of its folder."""
    settings = teacher_config(config)
    return {
        "teacher": dataclasses.asdict(config.teacher),
        "data": task.splits.fingerprint(),
        "max_length": config.data.max_length,
        "training": {name: getattr(settings, name) for name in TEACHER_TRAINING},
    }


def fine_tune_teacher(config: TrainConfig, task: Task, *, cache_dir: Path, progress: bool = True) -> Path:
    """Folder of the teacher fine-tuned on ``task``, trained on first use and cached after.

    With ``config.teacher.epochs == 0`` the teacher keeps a seeded, untrained head, as in the
    original study. The folder holds ``metrics.json`` with the teacher's validation and test metrics.

    Raises:
        ToxituneError: The teacher's fine-tuning collapsed or diverged.
    """
    settings = teacher_config(config)
    key = fingerprint(teacher_key(config, task))
    folder = cache_dir / "teachers" / key
    with locked(folder):
        if (folder / "metrics.json").exists():
            return folder
        if config.teacher.epochs == 0:
            set_seed(config.teacher.seed)
            model = load_classifier(task.base_checkpoint, task.label_names)
            summary = {"status": "untrained", "epochs": 0}
        else:
            checkpoint = folder.with_name(folder.name + ".checkpoint.pt")
            result = train(settings, task, progress=progress, checkpoint=checkpoint)
            checkpoint.unlink(missing_ok=True)
            if result.status in (Status.COLLAPSED, Status.DIVERGED):
                raise ToxituneError(
                    f"teacher fine-tuning {result.status.value} ({result.reason}); "
                    "give it more data or epochs (--train-size, --teacher-epochs), another --teacher-lr, or --teacher-epochs 0"
                )
            model, summary = result.model, result.summary()
        metrics = {
            name: evaluate_split(
                model,
                getattr(task, name),
                task.label_names,
                pad_token_id=task.tokenizer.pad_token_id,
                batch_size=settings.eval_batch_size,
            ).to_dict()
            for name in ("validation", "test")
        }
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        save_classifier(model, task.tokenizer, staging)
        (staging / "metrics.json").write_text(json.dumps({**metrics, "training": summary}, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def _teacher_train_logits(teacher_dir: Path, task: Task, batch_size: int) -> torch.Tensor:
    model = load_classifier(str(teacher_dir), task.label_names)
    return split_logits(model, task.train, pad_token_id=task.tokenizer.pad_token_id, batch_size=batch_size)

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
from trainers.config import TeacherConfig, TrainConfig
from trainers.data import encode_split, load_splits
from trainers.errors import ConfigError, ToxituneError
from trainers.evaluate import (
    BatchReader,
    batch_logits,
    evaluate_split,
    metrics_from_logits,
    split_logits,
    split_outputs,
)
from trainers.intermediate import batch_cls_states
from trainers.loop import Status, train
from trainers.losses import mean_log_probabilities
from trainers.models import (
    check_checkpoint,
    load_classifier,
    load_model_config,
    load_tokenizer,
    resolve_checkpoint,
    save_classifier,
)
from trainers.task import Task

# A teacher's per-example outputs on the training split, cached in its folder beside its weights.
TRAIN_LOGITS = "train_logits.pt"
TRAIN_CLS_STATES = "train_cls_states.pt"


def prepare_task(
    config: TrainConfig, *, cache_dir: Path, progress: bool = True, cls_states: bool = False
) -> Task:
    """Load and tokenise the data and, for distillation, fine-tune the teacher(s) and cache their logits.

    An ensemble's members are fine-tuned and cached one by one, each as a lone teacher would be; the
    task holds their stacked logits and the ensemble's own metrics. With ``w_hidden > 0`` or ``cls_states``
    the first teacher's [CLS] states of every layer are cached too (``train_cls_states.pt``).

    Every expensive part is cached under ``cache_dir`` by a fingerprint of what determines it, so
    a second call, from this process or another, reuses it.

    Args:
        config: The run's settings; only data, teacher and (for the size check) batch size matter.
        cache_dir: Folder for tokens, fine-tuned teachers and teacher logits.
        progress: Show progress bars while fine-tuning the teacher.
        cls_states: Cache the teacher's [CLS] states even with ``config.loss.w_hidden`` at 0: a study
            whose trials may draw ``w_hidden`` asks for them.
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
    folders = [
        fine_tune_teacher(
            dataclasses.replace(config, teacher=member, ensemble=()),
            task,
            cache_dir=cache_dir,
            progress=progress,
        )
        for member in config.teachers
    ]
    logits = [_cached_train_outputs(folder, TRAIN_LOGITS, task, config.eval_batch_size) for folder in folders]
    if len(folders) == 1:
        teacher_logits, metrics = logits[0], json.loads((folders[0] / "metrics.json").read_text())
    else:
        teacher_logits = torch.stack(logits)
        metrics = _ensemble_metrics(folders, task, cache_dir=cache_dir, batch_size=config.eval_batch_size)
    hidden = None
    if cls_states or config.loss.w_hidden > 0:
        hidden = _cached_train_outputs(
            folders[0], TRAIN_CLS_STATES, task, config.eval_batch_size, batch_cls_states
        )
    return dataclasses.replace(
        task,
        teacher_checkpoint=str(folders[0]),
        teacher_logits=teacher_logits,
        teacher_metrics=metrics,
        teacher_hidden=hidden,
    )


def describe_teacher(metrics: dict[str, Any], metric: str) -> str:
    """``teacher: validation macro_f1 0.8123, test 0.8011``; an ensemble's line adds each member's scores."""
    scores = f"validation {metric} {metrics['validation'][metric]:.4f}, test {metrics['test'][metric]:.4f}"
    members = metrics.get("members")
    if not members:
        return f"teacher: {scores}"
    each = "; ".join(f"{m['validation'][metric]:.4f}, {m['test'][metric]:.4f}" for m in members)
    return f"ensemble of {len(members)} teachers: {scores} (each member's validation, test: {each})"


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The settings the teacher is fine-tuned with: the study's fixed teacher settings, not a trial's."""
    teacher = config.teacher
    epochs = max(teacher.epochs, 1)
    return TrainConfig(
        method="teacher",
        data=config.data,
        teacher=teacher,
        lora=teacher.lora,
        epochs=epochs,
        lr=teacher.lr,
        batch_size=teacher.batch_size,
        seed=teacher.seed,
        warmup_ratio=teacher.warmup_ratio,
        weight_decay=teacher.weight_decay,
        hidden_dropout=teacher.hidden_dropout,
        attention_dropout=teacher.attention_dropout,
        # A teacher is judged by where it ends up, not by a slow start; its best epoch is kept.
        patience=0,
        collapse_warmup_epochs=epochs,
    )


def teacher_of(run: TrainConfig) -> TeacherConfig:
    """The teacher settings that fine-tune the way ``run``, a teacher or LoRA study's trial, trained.

    What a teacher fine-tune fixes itself (keeping its best epoch, one evaluation an epoch) is not
    carried over; everything :func:`teacher_config` reads is.
    """
    return TeacherConfig(
        name=run.teacher.name,
        epochs=run.epochs,
        lr=run.lr,
        batch_size=run.batch_size,
        seed=run.seed,
        warmup_ratio=run.warmup_ratio,
        weight_decay=run.weight_decay,
        hidden_dropout=run.hidden_dropout,
        attention_dropout=run.attention_dropout,
        kind="lora" if run.method == "lora" else run.teacher.kind,
        lora=run.lora,
    )


# The training settings that shape a fine-tuned teacher. Listed, not read off the whole config, so that
# a setting added for students (a loss weight, say) keeps every cached teacher.
TEACHER_TRAINING = (
    "epochs", "lr", "batch_size", "seed", "weight_decay", "warmup_ratio", "max_grad_norm",
    "hidden_dropout", "attention_dropout", "metric", "patience", "evals_per_epoch",
)  # fmt: skip


# Teacher settings the key leaves out of its "teacher" part: the training part holds the first four,
# and the ensemble's size is no property of one member. The key of a teacher set as before they were
# added is so unchanged, and its cached folder still found.
KEYED_BY_TRAINING = ("warmup_ratio", "weight_decay", "hidden_dropout", "attention_dropout", "ensemble")


def teacher_key(config: TrainConfig, task: Task) -> dict[str, Any]:
    """What decides the teacher that ``config`` distils from on ``task``: the cache key of its folder."""
    settings = teacher_config(config)
    teacher = dataclasses.asdict(config.teacher)
    for name in KEYED_BY_TRAINING:
        del teacher[name]
    if config.teacher.kind == "full":  # LoRA's settings shape a LoRA teacher only
        del teacher["kind"], teacher["lora"]
    return {
        "teacher": teacher,
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


def _cached_train_outputs(
    teacher_dir: Path, name: str, task: Task, batch_size: int, read: BatchReader = batch_logits
) -> torch.Tensor:
    """What ``read`` takes from the teacher in ``teacher_dir`` on every training example, computed on first use."""
    path = teacher_dir / name
    with locked(path):
        if not path.exists():
            model = load_classifier(str(teacher_dir), task.label_names)
            pad = task.tokenizer.pad_token_id
            save_tensors(
                split_outputs(model, task.train, pad_token_id=pad, batch_size=batch_size, read=read), path
            )
    return load_tensors(path)


def _ensemble_metrics(folders: list[Path], task: Task, *, cache_dir: Path, batch_size: int) -> dict[str, Any]:
    """The ensemble's validation and test metrics (argmax of its mean probabilities) and each member's.

    Cached by the members' folders, which their keys name.
    """
    path = cache_dir / "ensembles" / fingerprint([folder.name for folder in folders]) / "metrics.json"
    with locked(path):
        if not path.exists():
            metrics: dict[str, Any] = {}
            pad = task.tokenizer.pad_token_id
            models = [load_classifier(str(folder), task.label_names) for folder in folders]
            for name in ("validation", "test"):
                split = getattr(task, name)
                logits = torch.stack(
                    [split_logits(m, split, pad_token_id=pad, batch_size=batch_size) for m in models]
                )
                # Log mean probabilities: their argmax is the ensemble's vote, their softmax its probabilities.
                mean = mean_log_probabilities(logits)
                metrics[name] = metrics_from_logits(mean, split.labels, task.label_names).to_dict()
            metrics["members"] = [
                {"folder": folder.name, **json.loads((folder / "metrics.json").read_text())}
                for folder in folders
            ]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(metrics, indent=2))
    return json.loads(path.read_text())

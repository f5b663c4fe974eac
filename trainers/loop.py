"""The training loop: one configuration, one model, evaluated on validation as it trains.

The loop never reads the test split and knows nothing of search or tracking: callers watch it
through ``on_eval`` and may stop it from there.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from trainers.checkpoint import Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from trainers.config import TrainConfig, maximizes
from trainers.data import make_loader
from trainers.device import cuda_graphs, make_accelerator
from trainers.evaluate import Metrics, evaluate
from trainers.graphs import GRAPH_WIDTH_MULTIPLE, GraphedLogits, eager_logits
from trainers.losses import classification_loss, distillation_loss
from trainers.models import (
    apply_lora,
    build_student,
    load_classifier,
    restore_trainable_state,
    trainable_state,
)
from trainers.task import Task


class Status(enum.StrEnum):
    """How a run ended."""

    COMPLETED = "completed"  # ran every epoch
    EARLY_STOPPED = "early_stopped"  # patience ran out; the best evaluation is kept
    STOPPED = "stopped"  # the on_eval callback asked to stop (a pruned trial)
    COLLAPSED = "collapsed"  # predictions fell to one class, or the loss stuck at chance
    DIVERGED = "diverged"  # the training loss became NaN or infinite (checked at each evaluation)


# Runs that failed rather than finished: their scores are not a configuration's quality.
FAILURES = (Status.COLLAPSED, Status.DIVERGED)


@dataclass(frozen=True)
class EvalRecord:
    """One validation pass, with the mean training losses since the previous one."""

    step: int
    epoch: float
    train_loss: float
    train_cls: float
    train_div: float
    train_cos: float
    validation: Metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalRecord:
        return cls(**{**values, "validation": Metrics(**values["validation"])})


EvalCallback = Callable[[EvalRecord], "bool | None"]
"""Called after every evaluation; returning ``True`` stops the run with status ``stopped``."""


@dataclass
class TrainResult:
    """The outcome of :func:`train`; ``model`` holds the best evaluation's weights."""

    status: Status
    reason: str | None
    best: EvalRecord | None
    history: list[EvalRecord]
    model: nn.Module
    steps: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Everything but the model, ready for JSON."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "best": self.best.to_dict() if self.best else None,
            "history": [record.to_dict() for record in self.history],
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class EarlyStopping:
    """Patience on one metric: stop once ``patience`` epochs pass without improvement (0 never).

    Counted in epochs, not evaluations, so that reporting more often (``evals_per_epoch``) gives the
    pruner more chances without making early stopping hastier.
    """

    patience: float
    maximize: bool
    best: float | None = None
    best_epoch: float = 0.0
    epoch: float = 0.0

    def update(self, value: float, epoch: float) -> bool:
        """Record ``value``, evaluated at ``epoch``; return whether it is a new best."""
        self.epoch = epoch
        improved = self.best is None or (value > self.best if self.maximize else value < self.best)
        if improved:
            self.best, self.best_epoch = value, epoch
        return improved

    @property
    def should_stop(self) -> bool:
        # The tolerance absorbs the rounding of epochs computed as step / steps_per_epoch.
        return self.patience > 0 and self.epoch - self.best_epoch >= self.patience - 1e-6


def collapse_reason(record: EvalRecord, num_labels: int, *, tolerance: float = 0.01) -> str | None:
    """Why a run looks collapsed, or ``None``.

    A run has collapsed when every validation prediction is one class, or when its training
    cross-entropy sits within ``tolerance`` (relative) of ``ln(num_labels)``, the loss of a uniform guess.
    """
    predicted = [sum(column) for column in zip(*record.validation.confusion, strict=True)]
    if sum(count > 0 for count in predicted) <= 1:
        label = max(range(num_labels), key=lambda i: predicted[i])
        return f"every validation prediction is class {label}"
    chance = math.log(num_labels)
    if abs(record.train_cls - chance) <= tolerance * chance:
        return f"training cross-entropy {record.train_cls:.4f} is stuck at ln({num_labels})={chance:.4f}"
    return None


def build_model(config: TrainConfig, task: Task) -> nn.Module:
    """The model that ``config.method`` trains, before training."""
    dropout = {"hidden_dropout": config.hidden_dropout, "attention_dropout": config.attention_dropout}
    if config.distills:
        teacher = load_classifier(task.teacher_checkpoint, task.label_names, **dropout)
        return build_student(teacher, config.method)
    model = load_classifier(task.base_checkpoint, task.label_names, **dropout)
    return apply_lora(model, config.lora) if config.method == "lora" else model


def evaluation_points(steps_per_epoch: int, evals_per_epoch: int) -> frozenset[int]:
    """Steps within an epoch (1-based) after which to evaluate: evenly spaced, ending on the last.

    Spacing by fractions of an epoch, not by a step count, keeps the n-th evaluation of runs with
    different batch sizes at the same point of training, which is what a pruner compares.
    """
    return frozenset(
        max(1, round(steps_per_epoch * i / evals_per_epoch)) for i in range(1, evals_per_epoch + 1)
    )


def make_train_loader(config: TrainConfig, task: Task, *, graphs: bool = False) -> DataLoader:
    """The run's training batches, shuffled by its seed: the same batches for the same config.

    With ``graphs``, widths are rounded up to :data:`~trainers.graphs.GRAPH_WIDTH_MULTIPLE`, so that
    few shapes need capturing.
    """
    return make_loader(
        task.train,
        batch_size=config.batch_size,
        pad_token_id=task.tokenizer.pad_token_id,
        shuffle=True,
        seed=config.seed,
        width_multiple=GRAPH_WIDTH_MULTIPLE if graphs else 1,
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and LayerNorm weights are not decayed, as in BERT."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates the 12M-entry embedding table several times faster than the default loop.
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


def train(
    config: TrainConfig,
    task: Task,
    *,
    on_eval: EvalCallback | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``task``, keep the best validation checkpoint and return it.

    Args:
        config: The run's hyperparameters.
        task: Prepared data and teacher (see :func:`trainers.prepare.prepare_task`).
        on_eval: Called after each evaluation; returning ``True`` stops the run.
        progress: Show a progress bar over epochs and steps.
        checkpoint: File for epoch-end checkpoints; a run that finds one there continues from it.
    """
    if config.distills and task.teacher_logits is None:
        raise ValueError("a distillation run needs a task prepared with a teacher")
    started = time.monotonic()
    set_seed(config.seed)
    accelerator = make_accelerator()
    graphs = cuda_graphs()
    model = build_model(config, task)
    train_loader = make_train_loader(config, task, graphs=graphs)
    val_loader = make_loader(
        task.validation,
        batch_size=config.eval_batch_size,
        pad_token_id=task.tokenizer.pad_token_id,
        shuffle=False,
    )
    sampler = train_loader.batch_sampler  # its pass count decides the batch order, so checkpoints keep it
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(config.warmup_ratio * total_steps), total_steps
    )
    stopper = EarlyStopping(config.patience, maximize=maximizes(config.metric))
    history: list[EvalRecord] = []
    best: EvalRecord | None = None
    best_state = None
    step, seconds_before = 0, 0.0
    if checkpoint and (saved := load_checkpoint(checkpoint, config)) is not None:
        restore_trainable_state(model, saved.model)
        optimizer.load_state_dict(saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        sampler.passes = saved.sampler_passes
        history = [EvalRecord.from_dict(record) for record in saved.history]
        best = history[saved.best_index] if saved.best_index is not None else None
        best_state = saved.best_state
        if best is not None:
            # The stopper's whole state is the best evaluation, which the history already holds.
            stopper.update(best.validation.value(config.metric), best.epoch)
        step, seconds_before = saved.step, saved.seconds
        restore_rng(saved.rng)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    teacher_logits = task.teacher_logits.to(accelerator.device) if config.distills else None
    logits_of = GraphedLogits(model) if graphs else eager_logits(model)
    eval_points = evaluation_points(steps_per_epoch, config.evals_per_epoch)
    sums, count = torch.zeros(4, device=accelerator.device), 0
    status, reason = Status.COMPLETED, None
    bar = tqdm(
        total=total_steps, initial=step, desc=config.method, disable=not progress, leave=False, unit="step"
    )

    model.train()
    while step < total_steps and reason is None:
        for batch in train_loader:
            epoch = step / steps_per_epoch
            logits = logits_of(batch["input_ids"], batch["attention_mask"])
            if config.distills:
                parts = distillation_loss(
                    logits, teacher_logits[batch["index"]], batch["labels"], config.loss, epoch=epoch
                )
            else:
                parts = classification_loss(logits, batch["labels"])
            accelerator.backward(parts.total)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # Summed on the device and read only at evaluations: reading a loss on the host every
            # step would make the CPU wait for the GPU's queue to drain before launching the next step.
            sums += torch.stack([p.detach().float() for p in parts])
            count += 1
            bar.update()
            if (step - 1) % steps_per_epoch + 1 not in eval_points:
                continue

            means = (sums / count).tolist()
            if not math.isfinite(means[0]):
                status = Status.DIVERGED
                reason = f"training loss became {means[0]} between steps {step - count + 1} and {step}"
                break
            sums, count = torch.zeros(4, device=accelerator.device), 0
            metrics = evaluate(model, val_loader, task.validation.labels, task.label_names)
            record = EvalRecord(step, step / steps_per_epoch, *means, validation=metrics)
            history.append(record)
            if stopper.update(metrics.value(config.metric), record.epoch):
                best, best_state = record, trainable_state(accelerator.unwrap_model(model))
            bar.set_postfix(
                epoch=f"{record.epoch:.2f}",
                loss=f"{record.train_loss:.4f}",
                **{config.metric: f"{metrics.value(config.metric):.4f}"},
            )
            caller_stops = on_eval is not None and on_eval(record)
            if record.epoch >= config.collapse_warmup_epochs and step >= config.collapse_min_steps:
                if (collapsed := collapse_reason(record, len(task.label_names))) is not None:
                    status, reason = Status.COLLAPSED, collapsed
            if reason is None and caller_stops and step < total_steps:
                status, reason = Status.STOPPED, f"stopped by the caller at step {step}"
            if reason is None and stopper.should_stop and step < total_steps:
                status, reason = (
                    Status.EARLY_STOPPED,
                    f"no {config.metric} improvement in {config.patience:g} epochs",
                )
            if reason is not None or step >= total_steps:
                break
            if checkpoint and step % steps_per_epoch == 0:
                save_checkpoint(
                    Checkpoint(
                        config=config.to_dict(),
                        step=step,
                        seconds=seconds_before + time.monotonic() - started,
                        model=trainable_state(accelerator.unwrap_model(model)),
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        sampler_passes=sampler.passes,
                        history=[record.to_dict() for record in history],
                        best_index=history.index(best) if best else None,
                        best_state=best_state,
                        rng=capture_rng(),
                    ),
                    checkpoint,
                )
    bar.close()
    if status in (Status.COMPLETED, Status.EARLY_STOPPED) and best is not None:
        # The warm-ups only keep a slow starter from being judged early; the evaluation that is
        # shipped is always judged, however short the run.
        if (collapsed := collapse_reason(best, len(task.label_names))) is not None:
            status, reason = Status.COLLAPSED, f"its best evaluation, at epoch {best.epoch:.2f}: {collapsed}"

    model = accelerator.unwrap_model(model)
    if best_state is not None:
        restore_trainable_state(model, best_state)
    model.eval()
    seconds = seconds_before + time.monotonic() - started
    return TrainResult(status, reason, best, history, model, step, seconds)

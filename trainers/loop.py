"""The training loop: one configuration, one model, evaluated on validation as it trains.

The loop never reads the test split and knows nothing of search or tracking: callers watch it
through ``on_eval`` and may stop it from there.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from trainers.errors import ConfigError
from trainers.evaluate import Metrics, evaluate
from trainers.graphs import GRAPH_WIDTH_MULTIPLE, GraphedLogits, eager_logits
from trainers.intermediate import IntermediateTargets, attention_implementation, uses_intermediate
from trainers.losses import LossParts, classification_loss, distillation_loss
from trainers.models import (
    apply_lora,
    build_student,
    config_layers,
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
    # After validation, with defaults: checkpoints written before these parts existed still load.
    train_hidden: float = 0.0
    train_attn: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, metric: str) -> str:
        """``epoch 1.00 loss 0.4321 macro_f1 0.8123``, for a progress bar."""
        return (
            f"epoch {self.epoch:.2f} loss {self.train_loss:.4f} {metric} {self.validation.value(metric):.4f}"
        )

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


def predicts_one_class(record: EvalRecord) -> bool:
    """Whether every validation prediction of ``record`` is the same class."""
    predicted = [sum(column) for column in zip(*record.validation.confusion, strict=True)]
    return sum(count > 0 for count in predicted) <= 1


def collapse_reason(record: EvalRecord, num_labels: int, *, tolerance: float = 0.01) -> str | None:
    """Why a run looks collapsed, or ``None``.

    A run has collapsed when every validation prediction is one class, or when its training
    cross-entropy sits within ``tolerance`` (relative) of ``ln(num_labels)``, the loss of a uniform guess.
    """
    if predicts_one_class(record):
        predicted = [sum(column) for column in zip(*record.validation.confusion, strict=True)]
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
        teacher = load_classifier(
            task.teacher_checkpoint,
            task.label_names,
            attn_implementation=attention_implementation(config),
            **dropout,
        )
        return build_student(teacher, config_layers(config, teacher.config.num_hidden_layers))
    model = load_classifier(task.base_checkpoint, task.label_names, **dropout)
    return apply_lora(model, config.lora) if config.method == "lora" or config.lora_teacher else model


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


def make_eval_loader(config: TrainConfig, task: Task) -> DataLoader:
    """The validation batches, longest first, in the same order every time."""
    return make_loader(
        task.validation,
        batch_size=config.eval_batch_size,
        pad_token_id=task.tokenizer.pad_token_id,
        shuffle=False,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """A linear warm-up over ``config.warmup_ratio`` of the steps, then a linear decay to 0."""
    return get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and LayerNorm weights are not decayed, as in BERT."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates the 12M-entry embedding table several times faster than the default loop.
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


@dataclass
class RunState:
    """How far a run has got: what an epoch-end checkpoint keeps and a resumed run starts from.

    ``seconds`` is the training time spent before this process took the run over.
    """

    step: int = 0
    seconds: float = 0.0
    history: list[EvalRecord] = field(default_factory=list)
    best: EvalRecord | None = None
    best_state: dict[str, torch.Tensor] | None = None
    status: Status = Status.COMPLETED
    reason: str | None = None

    def record(self, record: EvalRecord, stopper: EarlyStopping, metric: str, model: nn.Module) -> None:
        """Add an evaluation; keep the model's weights when it is the best so far."""
        self.history.append(record)
        if stopper.update(record.validation.value(metric), record.epoch):
            self.best, self.best_state = record, trainable_state(model)


class LossMeter:
    """The loss parts summed over steps on the device, read only at evaluations.

    Reading a loss on the host every step would make the CPU wait for the GPU's queue to drain
    before launching the next step.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums, self.count = torch.zeros(len(LossParts._fields), device=device), 0

    def add(self, parts: LossParts) -> None:
        self.sums += torch.stack([part.detach().float() for part in parts])
        self.count += 1

    def take(self) -> tuple[list[float], int]:
        """The means since the last call and how many steps they cover, then start again."""
        means, count = (self.sums / self.count).tolist(), self.count
        self.sums, self.count = torch.zeros(len(LossParts._fields), device=self.device), 0
        return means, count


def decide(
    record: EvalRecord,
    config: TrainConfig,
    *,
    stopper: EarlyStopping,
    caller_stops: bool,
    finished: bool,
    num_labels: int,
    best: EvalRecord | None,
) -> tuple[Status, str | None]:
    """How a run stands after ``record``: ``(COMPLETED, None)`` to go on, else how it ends and why.

    A collapse is judged once both warm-ups have passed; the caller's stop and early stopping only
    matter before the last step, after which the run is complete anyway. Early stopping waits while
    the ``best`` evaluation so far predicts one class: a run that has not yet left the majority class
    has nothing to keep, and whether it is a slow starter or collapsed is the collapse check's call.
    """
    if record.epoch >= config.collapse_warmup_epochs and record.step >= config.collapse_min_steps:
        if (collapsed := collapse_reason(record, num_labels)) is not None:
            return Status.COLLAPSED, collapsed
    if finished:
        return Status.COMPLETED, None
    if caller_stops:
        return Status.STOPPED, f"stopped by the caller at step {record.step}"
    if stopper.should_stop and best is not None and not predicts_one_class(best):
        return Status.EARLY_STOPPED, f"no {config.metric} improvement in {config.patience:g} epochs"
    return Status.COMPLETED, None


def judge_shipped(state: RunState, num_labels: int) -> None:
    """Call a run that ended well but ships a one-class best evaluation ``collapsed``.

    The warm-ups only keep a slow starter from being judged early; the evaluation that is shipped is
    always judged, however short the run.
    """
    if state.status in (Status.COMPLETED, Status.EARLY_STOPPED) and state.best is not None:
        if (collapsed := collapse_reason(state.best, num_labels)) is not None:
            state.status = Status.COLLAPSED
            state.reason = f"its best evaluation, at epoch {state.best.epoch:.2f}: {collapsed}"


def resume(
    path: Path | None,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: Any,
    stopper: EarlyStopping,
) -> RunState:
    """Put the checkpoint at ``path`` back into the run's objects; a fresh state when there is none."""
    if path is None or (saved := load_checkpoint(path, config)) is None:
        return RunState()
    restore_trainable_state(model, saved.model)
    optimizer.load_state_dict(saved.optimizer)
    scheduler.load_state_dict(saved.scheduler)
    sampler.passes = saved.sampler_passes
    history = [EvalRecord.from_dict(record) for record in saved.history]
    best = history[saved.best_index] if saved.best_index is not None else None
    if best is not None:
        # The stopper's whole state is the best evaluation, which the history already holds.
        stopper.update(best.validation.value(config.metric), best.epoch)
    restore_rng(saved.rng)
    return RunState(saved.step, saved.seconds, history, best, saved.best_state)


def save(
    path: Path,
    config: TrainConfig,
    state: RunState,
    seconds: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: Any,
) -> None:
    """Write ``state`` and the run's objects to ``path``, for :func:`resume`."""
    checkpoint = Checkpoint(
        config=config.to_dict(),
        step=state.step,
        seconds=seconds,
        model=trainable_state(model),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        sampler_passes=sampler.passes,
        history=[record.to_dict() for record in state.history],
        best_index=state.history.index(state.best) if state.best else None,
        best_state=state.best_state,
        rng=capture_rng(),
    )
    save_checkpoint(checkpoint, path)


def evaluate_and_decide(
    state: RunState,
    losses: LossMeter,
    config: TrainConfig,
    task: Task,
    *,
    model: nn.Module,
    val_loader: DataLoader,
    stopper: EarlyStopping,
    on_eval: EvalCallback | None,
    steps_per_epoch: int,
    total_steps: int,
) -> EvalRecord | None:
    """Evaluate after ``state.step`` steps, set how the run stands, and return the evaluation.

    A non-finite mean training loss since the last evaluation ends the run as diverged, with no
    evaluation; otherwise the evaluation is recorded, shown to ``on_eval``, and :func:`decide` rules.
    """
    means, steps = losses.take()
    if not math.isfinite(means[0]):
        state.status = Status.DIVERGED
        state.reason = (
            f"training loss became {means[0]} between steps {state.step - steps + 1} and {state.step}"
        )
        return None
    metrics = evaluate(model, val_loader, task.validation.labels, task.label_names)
    # The intermediate parts come after the metrics, so records written before they existed still load.
    (total, cls, div, cos), (hidden, attn) = means[:4], means[4:]
    record = EvalRecord(state.step, state.step / steps_per_epoch, total, cls, div, cos, metrics, hidden, attn)
    state.record(record, stopper, config.metric, model)
    caller_stops = on_eval is not None and bool(on_eval(record))
    state.status, state.reason = decide(
        record,
        config,
        stopper=stopper,
        caller_stops=caller_stops,
        finished=state.step >= total_steps,
        num_labels=len(task.label_names),
        best=state.best,
    )
    return record


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
        raise ConfigError(
            "a distillation run needs a task prepared with its teacher (prepare_task of its config)"
        )
    started = time.monotonic()
    set_seed(config.seed)
    # The intermediate losses read more than the logits a captured graph returns.
    accelerator, graphs = make_accelerator(), cuda_graphs() and not uses_intermediate(config)
    model = build_model(config, task)
    train_loader, val_loader = make_train_loader(config, task, graphs=graphs), make_eval_loader(config, task)
    sampler = train_loader.batch_sampler  # its pass count decides the batch order, so checkpoints keep it
    steps_per_epoch, total_steps = len(train_loader), len(train_loader) * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    stopper = EarlyStopping(config.patience, maximize=maximizes(config.metric))
    state = resume(checkpoint, config, model, optimizer, scheduler, sampler, stopper)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    teacher_logits = task.teacher_logits.to(accelerator.device) if config.distills else None
    intermediate = (
        IntermediateTargets(config, task, accelerator.unwrap_model(model), accelerator.device)
        if uses_intermediate(config)
        else None
    )
    logits_of = GraphedLogits(model) if graphs else eager_logits(model)
    eval_points = evaluation_points(steps_per_epoch, config.evals_per_epoch)
    losses = LossMeter(accelerator.device)
    bar = tqdm(total=total_steps, initial=state.step, desc=config.method, disable=not progress, leave=False)

    model.train()
    while state.step < total_steps and state.reason is None:
        for batch in train_loader:
            if intermediate is None:
                logits, hidden, attn = logits_of(batch["input_ids"], batch["attention_mask"]), None, None
            else:
                logits, hidden, attn = intermediate.forward(model, batch)
            if config.distills:
                # An ensemble's logits are [K, examples, classes]: the batch is taken from each member.
                teacher, epoch = teacher_logits[..., batch["index"], :], state.step / steps_per_epoch
                parts = distillation_loss(
                    logits, teacher, batch["labels"], config.loss, epoch=epoch, hidden=hidden, attn=attn
                )
            else:
                parts = classification_loss(logits, batch["labels"])
            accelerator.backward(parts.total)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            losses.add(parts)
            bar.update()
            if (state.step - 1) % steps_per_epoch + 1 not in eval_points:
                continue

            record = evaluate_and_decide(
                state, losses, config, task, model=accelerator.unwrap_model(model), val_loader=val_loader,
                stopper=stopper, on_eval=on_eval, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
            )  # fmt: skip
            if record is not None:
                bar.set_postfix_str(record.describe(config.metric))
            if state.reason is not None or state.step >= total_steps:
                break
            if checkpoint and state.step % steps_per_epoch == 0:
                seconds = state.seconds + time.monotonic() - started
                model_now = accelerator.unwrap_model(model)
                save(checkpoint, config, state, seconds, model_now, optimizer, scheduler, sampler)
    bar.close()
    judge_shipped(state, len(task.label_names))

    model = accelerator.unwrap_model(model)
    if state.best_state is not None:
        restore_trainable_state(model, state.best_state)
    model.eval()
    seconds = state.seconds + time.monotonic() - started
    return TrainResult(state.status, state.reason, state.best, state.history, model, state.step, seconds)

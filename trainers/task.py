"""What the runs of one study share: data, tokens, the fine-tuned teacher and its logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainers.data import EncodedSplit, Splits


@dataclass(frozen=True)
class Task:
    """Prepared inputs of a training run; build it with :func:`trainers.prepare.prepare_task`.

    Attributes:
        splits: The raw texts and labels.
        train, validation, test: Their token ids.
        tokenizer: The tokenizer of every model in the task.
        base_checkpoint: The pretrained checkpoint that ``teacher`` and ``lora`` runs start from.
        teacher_checkpoint: Folder of the fine-tuned teacher that students are copied from, or
            ``None`` when the task has no teacher.
        teacher_logits: The teacher's logits for every training example, in split order:
            ``[examples, classes]``, or ``[K, examples, classes]`` for an ensemble of K teachers.
        teacher_metrics: The teacher's recorded validation and test metrics; an ensemble's are its
            mean-probability predictions', with each member's under ``members``.
        teacher_hidden: ``[examples, layers, hidden]``: the (first) teacher's [CLS] state after each
            encoder layer, loaded only for a run with a hidden-state loss.
    """

    splits: Splits
    train: EncodedSplit
    validation: EncodedSplit
    test: EncodedSplit
    tokenizer: Any
    base_checkpoint: str
    teacher_checkpoint: str | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_metrics: dict[str, Any] | None = None
    teacher_hidden: torch.Tensor | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.splits.label_names

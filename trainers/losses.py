"""Loss functions: pure tensor arithmetic, no models and no state."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainers.config import LossConfig


class LossParts(NamedTuple):
    """The weighted total and its unweighted parts, for logging."""

    total: torch.Tensor
    cls: torch.Tensor
    div: torch.Tensor
    cos: torch.Tensor


def divergence_weight(epoch: float, w_div: float, warmup_epochs: float) -> float:
    """``w_div`` ramped linearly from 0 over ``warmup_epochs``; ``epoch`` may be fractional.

    Example:
        >>> divergence_weight(1.0, 0.5, warmup_epochs=2)
        0.25
    """
    if warmup_epochs <= 0:
        return w_div
    return w_div * min(1.0, epoch / warmup_epochs)


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch.

    The ``T²`` keeps the gradient scale independent of the temperature (Hinton et al., 2015).
    """
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def cosine_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch, as ``nn.CosineEmbeddingLoss`` with target 1."""
    return (1 - F.cosine_similarity(student_logits, teacher_logits, dim=-1)).mean()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossParts:
    """Cross-entropy alone, for the teacher and LoRA."""
    cls = F.cross_entropy(logits, labels)
    zero = torch.zeros((), device=logits.device)
    return LossParts(cls, cls.detach(), zero, zero)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    *,
    epoch: float,
) -> LossParts:
    """``w_cls·CE + w_div(epoch)·T²·KL + w_cos·cosine``, with ``w_div`` warmed in over epochs."""
    cls = F.cross_entropy(student_logits, labels)
    div = kl_to_teacher(student_logits, teacher_logits, config.temperature)
    cos = cosine_loss(student_logits, teacher_logits)
    w_div = divergence_weight(epoch, config.w_div, config.div_warmup_epochs)
    total = config.w_cls * cls + w_div * div + config.w_cos * cos
    return LossParts(total, cls.detach(), div.detach(), cos.detach())

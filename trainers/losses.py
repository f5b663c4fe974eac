"""Loss functions: pure tensor arithmetic, no models and no state."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from trainers.config import LossConfig


class LossParts(NamedTuple):
    """The weighted total and its unweighted parts, for logging; a part at weight 0 is 0."""

    total: torch.Tensor
    cls: torch.Tensor
    div: torch.Tensor
    cos: torch.Tensor
    hidden: torch.Tensor
    attn: torch.Tensor


def divergence_weight(epoch: float, w_div: float, warmup_epochs: float) -> float:
    """``w_div`` ramped linearly from 0 over ``warmup_epochs``; ``epoch`` may be fractional.

    Example:
        >>> divergence_weight(1.0, 0.5, warmup_epochs=2)
        0.25
    """
    if warmup_epochs <= 0:
        return w_div
    return w_div * min(1.0, epoch / warmup_epochs)


def mean_log_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log mean_k softmax(logits[k] / T)``: an ensemble's probabilities, from its members' ``[K, ..., classes]`` logits."""
    return torch.logsumexp(F.log_softmax(logits / temperature, dim=-1), dim=0) - math.log(logits.shape[0])


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch.

    The ``T²`` keeps the gradient scale independent of the temperature (Hinton et al., 2015).
    ``teacher_logits`` of shape ``[K, batch, classes]`` are an ensemble's: the target is the mean of
    its members' ``softmax(z/T)``, which depends on ``T`` and so is taken here, not cached.
    """
    student = F.log_softmax(student_logits / temperature, dim=-1)
    if teacher_logits.ndim == 3:
        teacher = mean_log_probabilities(teacher_logits, temperature)
    else:
        teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def cosine_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch, as ``nn.CosineEmbeddingLoss`` with target 1."""
    return (1 - F.cosine_similarity(student_logits, teacher_logits, dim=-1)).mean()


def hidden_state_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Squared distance between L2-normalised [CLS] states, averaged over layers and batch (PKD).

    Patient Knowledge Distillation (Sun et al., 2019) normalises the states so that the loss compares
    directions, not the norms, which grow with depth.

    Args:
        student_cls: ``[layers, batch, hidden]``: each student layer's [CLS] output.
        teacher_cls: The same shape: the [CLS] output of the teacher layer each was copied from.
    """
    difference = F.normalize(student_cls, dim=-1) - F.normalize(teacher_cls, dim=-1)
    return difference.pow(2).sum(dim=-1).mean()


def attention_loss(
    student_attn: torch.Tensor, teacher_attn: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """``KL(teacher ‖ student)`` of attention distributions, averaged over layers, heads and real queries.

    As in MiniLM (Wang et al., 2020), each query position's attention over the keys is a distribution;
    padded queries are left out. Padded keys hold probability 0 in both, and add nothing.

    Args:
        student_attn: ``[layers, batch, heads, queries, keys]`` attention probabilities.
        teacher_attn: The same shape: the probabilities of the teacher layer each student layer copies.
        attention_mask: ``[batch, tokens]``, 1 for a real token.
    """
    # kl_div treats a target of 0 as contributing 0; the floor keeps log(0) of a padded key finite.
    log_student = student_attn.clamp_min(torch.finfo(student_attn.dtype).tiny).log()
    per_query = F.kl_div(log_student, teacher_attn, reduction="none").sum(dim=-1)
    mask = attention_mask[None, :, None, :].to(per_query.dtype)
    return (per_query * mask).sum() / (mask.sum() * per_query.shape[0] * per_query.shape[2])


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossParts:
    """Cross-entropy alone, for the teacher and LoRA."""
    cls = F.cross_entropy(logits, labels)
    zero = torch.zeros((), device=logits.device)
    return LossParts(cls, cls.detach(), zero, zero, zero, zero)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    config: LossConfig,
    *,
    epoch: float,
    hidden: torch.Tensor | None = None,
    attn: torch.Tensor | None = None,
) -> LossParts:
    """``w_cls·CE + w_div(epoch)·T²·KL + w_cos·cosine + w_hidden·hidden + w_attn·attn``.

    ``w_div`` is warmed in over epochs. ``teacher_logits`` are ``[batch, classes]``, or an ensemble's
    ``[K, batch, classes]``: the cosine then compares with their mean, and the KL with the mean of
    their probabilities (:func:`kl_to_teacher`).

    Args:
        hidden: :func:`hidden_state_loss` of the batch; needed when ``config.w_hidden > 0``.
        attn: :func:`attention_loss` of the batch; needed when ``config.w_attn > 0``.
    """
    mean_logits = teacher_logits.mean(dim=0) if teacher_logits.ndim == 3 else teacher_logits
    cls = F.cross_entropy(student_logits, labels)
    div = kl_to_teacher(student_logits, teacher_logits, config.temperature)
    cos = cosine_loss(student_logits, mean_logits)
    w_div = divergence_weight(epoch, config.w_div, config.div_warmup_epochs)
    total = config.w_cls * cls + w_div * div + config.w_cos * cos
    # Added only when weighted, so that a config without them sums exactly the same terms as before.
    zero = torch.zeros((), device=student_logits.device)
    if config.w_hidden > 0:
        total = total + config.w_hidden * hidden
    if config.w_attn > 0:
        total = total + config.w_attn * attn
    hidden = zero if hidden is None else hidden.detach()
    attn = zero if attn is None else attn.detach()
    return LossParts(total, cls.detach(), div.detach(), cos.detach(), hidden, attn)

from __future__ import annotations

import math

import pytest
import torch

from trainers.config import LossConfig
from trainers.losses import classification_loss, cosine_loss, distillation_loss, divergence_weight

STUDENT = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]])
TEACHER = torch.tensor([[1.0, 0.0], [2.0, -2.0], [0.0, 1.0]])
LABELS = torch.tensor([0, 1, 1])


def _softmax(row, t):
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def _hand_loss(w_cls, w_div, w_cos, t, div_scale):
    n = len(STUDENT)
    ce = -sum(math.log(_softmax(s, 1)[y]) for s, y in zip(STUDENT.tolist(), LABELS.tolist(), strict=True)) / n
    kl = 0.0
    for s, te in zip(STUDENT.tolist(), TEACHER.tolist(), strict=True):
        p, q = _softmax(te, t), _softmax(s, t)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl = t * t * kl / n
    cos = 0.0
    for s, te in zip(STUDENT.tolist(), TEACHER.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(s, te, strict=True))
        cos += 1 - dot / (math.hypot(*s) * math.hypot(*te))
    cos /= n
    return w_cls * ce + w_div * div_scale * kl + w_cos * cos, ce, kl, cos


@pytest.mark.parametrize(
    ("weights", "temperature", "warmup", "epoch", "div_scale"),
    [
        ((1 / 3, 1 / 3, 1 / 3), 1.0, 0.0, 0.0, 1.0),
        ((0.5, 0.3, 0.2), 2.0, 0.0, 3.0, 1.0),
        ((0.2, 0.6, 0.2), 4.0, 2.0, 0.5, 0.25),
        ((1.0, 1.0, 0.0), 2.0, 2.0, 5.0, 1.0),
        ((1.0, 1.0, 1.0), 2.0, 1.0, 0.0, 0.0),
    ],
)
def test_distillation_loss_matches_a_hand_computation(weights, temperature, warmup, epoch, div_scale):
    config = LossConfig(*weights, temperature=temperature, div_warmup_epochs=warmup)
    parts = distillation_loss(STUDENT, TEACHER, LABELS, config, epoch=epoch)
    total, ce, kl, cos = _hand_loss(*weights, temperature, div_scale)
    assert parts.total.item() == pytest.approx(total, rel=1e-5)
    assert (parts.cls.item(), parts.div.item(), parts.cos.item()) == pytest.approx((ce, kl, cos), rel=1e-5)


def test_cosine_loss_is_the_original_cosine_embedding_loss():
    original = torch.nn.CosineEmbeddingLoss()(STUDENT, TEACHER, torch.ones(len(STUDENT)))
    assert cosine_loss(STUDENT, TEACHER).item() == pytest.approx(original.item())


def test_classification_loss_is_cross_entropy_with_zero_distillation_parts():
    parts = classification_loss(STUDENT, LABELS)
    assert parts.total.item() == pytest.approx(torch.nn.functional.cross_entropy(STUDENT, LABELS).item())
    assert parts.div.item() == parts.cos.item() == 0.0


@pytest.mark.parametrize(
    ("epoch", "w_div", "warmup", "expected"),
    [
        (0.0, 0.6, 0.0, 0.6),
        (0.0, 0.6, 3.0, 0.0),
        (1.5, 0.6, 3.0, 0.3),
        (3.0, 0.6, 3.0, 0.6),
        (7.0, 0.6, 3.0, 0.6),
        (0.25, 1.0, 0.5, 0.5),
    ],
)
def test_divergence_weight_warms_in_linearly(epoch, w_div, warmup, expected):
    assert divergence_weight(epoch, w_div, warmup) == pytest.approx(expected)


def test_gradient_flows_only_to_the_student():
    student = STUDENT.clone().requires_grad_()
    teacher = TEACHER.clone().requires_grad_()
    distillation_loss(student, teacher.detach(), LABELS, LossConfig(), epoch=1.0).total.backward()
    assert student.grad is not None and teacher.grad is None

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from trainers.config import LossConfig
from trainers.errors import ConfigError
from trainers.intermediate import PROBABILITIES, check_heads, cls_states
from trainers.losses import (
    attention_loss,
    classification_loss,
    cosine_loss,
    distillation_loss,
    divergence_weight,
    hidden_state_loss,
    kl_to_teacher,
)
from trainers.models import build_student

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


def _old_distillation_loss(student_logits, teacher_logits, labels, config, *, epoch):
    """distillation_loss as it was before the intermediate losses and ensembles, for the exactness check."""
    cls = torch.nn.functional.cross_entropy(student_logits, labels)
    div = kl_to_teacher(student_logits, teacher_logits, config.temperature)
    cos = cosine_loss(student_logits, teacher_logits)
    w_div = divergence_weight(epoch, config.w_div, config.div_warmup_epochs)
    return config.w_cls * cls + w_div * div + config.w_cos * cos, cls, div, cos


@pytest.mark.parametrize(
    "values",
    [{}, {"w_cls": 0.5, "w_div": 0.3, "w_cos": 0.2, "temperature": 4.0, "div_warmup_epochs": 2.0}],
)
def test_a_config_without_intermediate_weights_reproduces_the_old_losses_exactly(values):
    config = LossConfig(**values)
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(64, 2, generator=generator, requires_grad=True)
    teacher = torch.randn(64, 2, generator=generator)
    labels = torch.randint(0, 2, (64,), generator=generator)
    parts = distillation_loss(student, teacher, labels, config, epoch=0.5)
    old = _old_distillation_loss(student, teacher, labels, config, epoch=0.5)
    assert all(torch.equal(new, before) for new, before in zip(parts[:4], old, strict=True))
    assert parts.hidden.item() == parts.attn.item() == 0.0
    new_grad = torch.autograd.grad(parts.total, student)[0]
    assert torch.equal(new_grad, torch.autograd.grad(old[0], student)[0])


def test_an_ensemble_is_distilled_through_its_mean_probabilities_and_mean_logits():
    members = torch.stack([TEACHER, TEACHER.flip(-1)])
    config = LossConfig(temperature=2.0)
    parts = distillation_loss(STUDENT, members, LABELS, config, epoch=1.0)
    target = torch.softmax(members / 2.0, dim=-1).mean(dim=0)
    kl = (target * (target.log() - torch.log_softmax(STUDENT / 2.0, dim=-1))).sum(-1).mean() * 4.0
    assert parts.div.item() == pytest.approx(kl.item(), rel=1e-5)
    assert parts.cos.item() == pytest.approx(cosine_loss(STUDENT, members.mean(dim=0)).item())
    one = distillation_loss(STUDENT, TEACHER[None], LABELS, config, epoch=1.0)
    assert one.total.item() == pytest.approx(
        distillation_loss(STUDENT, TEACHER, LABELS, config, epoch=1.0).total.item()
    )


def _tiny_classifier(heads: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=20, hidden_size=32, num_hidden_layers=4, num_attention_heads=heads, intermediate_size=64,
        max_position_embeddings=32, attn_implementation="eager",
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def _intermediate_losses(student, teacher, layers):
    ids = torch.randint(5, 20, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 0, 0  # a padded example: its padded queries are left out
    ours = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        theirs = teacher(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
    chosen = [n - 1 for n in layers]
    hidden = hidden_state_loss(cls_states(ours.hidden_states), cls_states(theirs.hidden_states)[chosen])
    attn = attention_loss(
        torch.stack(ours.attentions), torch.stack([theirs.attentions[n] for n in chosen]), mask
    )
    return hidden, attn


def test_intermediate_losses_vanish_on_copied_layers_and_grow_and_train_once_they_differ():
    teacher = _tiny_classifier()
    student = build_student(teacher, "first").eval()  # teacher layers 1 and 2, the same computation
    hidden, attn = _intermediate_losses(student, teacher, (1, 2))
    assert hidden.item() < 1e-6 and attn.item() < 1e-6

    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        for weight in (
            student.bert.encoder.layer[0].attention.self.query.weight,
            student.bert.encoder.layer[0].output.dense.weight,
        ):
            weight.add_(torch.randn(weight.shape, generator=generator))
    hidden, attn = _intermediate_losses(student, teacher, (1, 2))
    assert hidden.item() > 1e-4 and attn.item() > 1e-4
    for loss in (hidden, attn):
        student.zero_grad()
        loss.backward(retain_graph=True)
        query = student.bert.encoder.layer[0].attention.self.query.weight.grad
        assert query is not None and query.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters()), "the teacher never trains"


def test_the_attention_loss_reads_the_probabilities_before_dropout():
    teacher = _tiny_classifier()
    teacher.config.hidden_dropout_prob = 0.0  # so that dropout reaches the first layer's attention only
    for layer in teacher.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.5
    for module in teacher.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0.5:
            module.p = 0.0
    teacher.config._attn_implementation = PROBABILITIES
    student = build_student(teacher, "first").train()  # its first layer sees the teacher's first input
    torch.manual_seed(3)
    ids = torch.randint(5, 20, (3, 9), generator=torch.Generator().manual_seed(1))
    ours = student(input_ids=ids, output_attentions=True).attentions[0]
    with torch.no_grad():
        theirs = teacher.eval()(input_ids=ids, output_attentions=True).attentions[0]
    assert attention_loss(ours[None], theirs[None], torch.ones_like(ids)).item() < 1e-6


def test_an_attention_loss_between_different_head_counts_is_a_config_error():
    with pytest.raises(ConfigError, match="the student has 4 and the teacher 2; set --w-attn 0"):
        check_heads(_tiny_classifier(heads=4).config, _tiny_classifier(heads=2).config)

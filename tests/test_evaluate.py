from __future__ import annotations

import math

import pytest
import torch

from trainers.evaluate import metrics_from_logits


def test_roc_auc_ranks_probabilities_while_every_prediction_is_the_majority_class():
    labels = torch.tensor([0, 0, 0, 1, 1])
    # Class 0 wins everywhere, but the offensive tweets lean further towards class 1.
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.1], [2.0, 0.2], [2.0, 1.0], [2.0, 1.5]])
    metrics = metrics_from_logits(logits, labels, ["not", "offensive"])
    assert metrics.macro_f1 == pytest.approx(0.375)  # F1 0.75 for class 0, 0 for class 1
    assert metrics.roc_auc == 1.0
    assert set(metrics.scalars()) == {"loss", "accuracy", "weighted_f1", "macro_f1", "roc_auc"}


def test_roc_auc_averages_one_vs_rest_beyond_two_classes_and_is_nan_for_one_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = torch.eye(3)[labels] * 3
    assert metrics_from_logits(logits, labels, ["a", "b", "c"]).roc_auc == 1.0
    assert math.isnan(
        metrics_from_logits(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), ["a", "b"]).roc_auc
    )

"""Classification metrics on a split: the original study's and a few more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch import nn
from torch.utils.data import DataLoader

from trainers.data import EncodedSplit, make_loader
from trainers.device import make_accelerator

# What a model gives for one batch of a split, first dimension the batch's examples.
BatchReader = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Metrics:
    """Metrics of one model on one split.

    ``precision``, ``recall`` and ``weighted_f1`` are support-weighted, as in the original study;
    ``roc_auc`` ranks the predicted class probabilities, so it moves while every prediction is still the
    majority class (one-vs-rest macro average beyond two classes; NaN when the split holds one class);
    ``per_class`` maps each label name to its precision, recall, F1 and support, and
    ``confusion[i][j]`` counts examples of label ``i`` predicted as ``j``.
    """

    loss: float
    accuracy: float
    precision: float
    recall: float
    weighted_f1: float
    macro_f1: float
    roc_auc: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]

    def value(self, name: str) -> float:
        """The scalar metric called ``name`` (``macro_f1``, ``accuracy``, ``weighted_f1`` or ``loss``)."""
        return float(getattr(self, name))

    def scalars(self) -> dict[str, float]:
        """Every single-number metric, by name (precision and recall left out: F1 summarises them)."""
        return {name: self.value(name) for name in ("loss", "accuracy", "weighted_f1", "macro_f1", "roc_auc")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str]) -> Metrics:
    """Metrics of predictions ``argmax(logits)`` against ``labels``."""
    loss = F.cross_entropy(logits.float(), labels).item()
    y_true = labels.numpy()
    y_pred = logits.argmax(dim=-1).numpy()
    classes = np.arange(len(label_names))
    precision, recall, weighted_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="weighted", zero_division=0
    )
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    per_class = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, name in enumerate(label_names)
    }
    return Metrics(
        loss=loss,
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision=float(precision),
        recall=float(recall),
        weighted_f1=float(weighted_f1),
        macro_f1=float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        roc_auc=_roc_auc(y_true, logits.float().softmax(dim=-1).numpy(), classes),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    )


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if len(classes) == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    return float(roc_auc_score(y_true, probabilities, labels=classes, multi_class="ovr", average="macro"))


def batch_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``model``'s logits on ``batch``: what :func:`predict_outputs` reads by default."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@torch.no_grad()
def predict_outputs(
    model: nn.Module, loader: DataLoader, size: int, read: BatchReader = batch_logits
) -> torch.Tensor:
    """What ``read`` takes from ``model`` on each batch, for every example of a loader's split.

    The model runs in evaluation mode (no dropout); the outputs are float32, on the CPU, in split order.
    """
    was_training = model.training
    model.eval()
    outputs = None
    for batch in loader:
        out = read(model, batch).float()
        if outputs is None:
            outputs = torch.empty((size, *out.shape[1:]))
        outputs[batch["index"].cpu()] = out.cpu()
    model.train(was_training)
    return outputs


def predict_logits(model: nn.Module, loader: DataLoader, size: int) -> torch.Tensor:
    """Logits for every example of a loader's split, on the CPU, in split order."""
    return predict_outputs(model, loader, size)


def evaluate(
    model: nn.Module, loader: DataLoader, labels: torch.Tensor, label_names: Sequence[str]
) -> Metrics:
    """Metrics of ``model`` on the split behind ``loader``, whose labels are ``labels``."""
    return metrics_from_logits(predict_logits(model, loader, len(labels)), labels, label_names)


def split_outputs(
    model: nn.Module,
    split: EncodedSplit,
    *,
    pad_token_id: int,
    batch_size: int,
    read: BatchReader = batch_logits,
) -> torch.Tensor:
    """:func:`predict_outputs` of ``model`` for every example of ``split``, on whatever device is available."""
    accelerator = make_accelerator()
    model = accelerator.prepare(model)
    loader = accelerator.prepare(
        make_loader(split, batch_size=batch_size, pad_token_id=pad_token_id, shuffle=False)
    )
    return predict_outputs(model, loader, len(split), read)


def split_logits(
    model: nn.Module, split: EncodedSplit, *, pad_token_id: int, batch_size: int
) -> torch.Tensor:
    """Logits of ``model`` for every example of ``split``, on whatever device is available."""
    return split_outputs(model, split, pad_token_id=pad_token_id, batch_size=batch_size)


def evaluate_split(
    model: nn.Module, split: EncodedSplit, label_names: Sequence[str], *, pad_token_id: int, batch_size: int
) -> Metrics:
    """Metrics of ``model`` on ``split``."""
    logits = split_logits(model, split, pad_token_id=pad_token_id, batch_size=batch_size)
    return metrics_from_logits(logits, split.labels, label_names)

"""The original study's hand-picked settings per method: the baseline a tuned configuration must beat."""

from __future__ import annotations

from trainers.config import DataConfig, LoraSettings, LossConfig, TeacherConfig, TrainConfig


def recipe(method: str, data: DataConfig, teacher: str) -> TrainConfig:
    """The original study's settings: fixed by hand, no early stopping, no collapse check.

    Distillation: equal loss weights, Adam (no weight decay), lr 5e-5, 5 epochs, batch 32, and a
    teacher whose head was never trained. LoRA: r 8, alpha 32, dropout 0.1 on q/k/v, lr 2e-4,
    batch 16, 2 epochs.
    """
    untouched = {
        "weight_decay": 0.0,
        "warmup_ratio": 0.0,
        "max_grad_norm": 0.0,
        "patience": 0,
        "collapse_warmup_epochs": 1e9,
    }
    if method == "lora":
        return TrainConfig(
            method="lora", data=data, teacher=TeacherConfig(name=teacher, epochs=0),
            lora=LoraSettings(rank=8, alpha=32, dropout=0.1, target_modules=("query", "key", "value")),
            lr=2e-4, batch_size=16, epochs=2, **untouched,
        )  # fmt: skip
    return TrainConfig(
        method=method, data=data, teacher=TeacherConfig(name=teacher, epochs=0), loss=LossConfig(),
        lr=5e-5, batch_size=32, epochs=5, **untouched,
    )  # fmt: skip

"""Device and precision, decided in one place: CUDA with bf16 where available, else CPU."""

from __future__ import annotations

import torch
from accelerate import Accelerator


def training_device() -> torch.device:
    """The device :func:`make_accelerator` trains on, for code that moves tensors by hand."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device``, so a timer read after it measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_accelerator() -> Accelerator:
    """An ``Accelerator`` on CUDA with bf16 autocast when a GPU supports it, else fp32 on the CPU."""
    if training_device().type == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Accelerator(mixed_precision=precision)
    return Accelerator(cpu=True, mixed_precision="no")

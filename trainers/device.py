"""Device and precision, decided in one place: CUDA with bf16 where available, else CPU."""

from __future__ import annotations

import torch
from accelerate import Accelerator


def make_accelerator() -> Accelerator:
    """An ``Accelerator`` on CUDA with bf16 autocast when a GPU supports it, else fp32 on the CPU."""
    if torch.cuda.is_available():
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Accelerator(mixed_precision=precision)
    return Accelerator(cpu=True, mixed_precision="no")

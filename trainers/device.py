"""Device and precision, decided in one place: CUDA with bf16 where available, else CPU."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration


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
        # cuDNN's attention sets itself up for every new (batch, width) shape, and dynamic padding
        # makes nearly every width new: on an H100 a first short run spent ~15 s more in attention
        # than a second one, and no more once this was off. The memory-efficient kernel takes any
        # shape at no set-up cost.
        torch.backends.cuda.enable_cudnn_sdp(False)
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        # Copies from pinned memory that do not wait: the GPU runs ahead while the next batch arrives.
        loading = DataLoaderConfiguration(non_blocking=True)
        return Accelerator(mixed_precision=precision, dataloader_config=loading)
    return Accelerator(cpu=True, mixed_precision="no")

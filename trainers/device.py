"""Device and precision, decided in one place: CUDA with bf16 where available, else CPU."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration

from trainers.config import GRAPHS_ENV, PRECISION_ENV
from trainers.errors import ConfigError

PRECISIONS = ("no", "bf16", "fp16")


def training_device() -> torch.device:
    """The device :func:`make_accelerator` trains on, for code that moves tensors by hand."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device``, so a timer read after it measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mixed_precision() -> str:
    """``$ACCELERATE_MIXED_PRECISION`` if set, else bf16 autocast on a GPU (fp16 without bf16), none on a CPU.

    Raises:
        ConfigError: The variable names no precision, or fp16 without a GPU.
    """
    cuda = training_device().type == "cuda"
    chosen = os.environ.get(PRECISION_ENV)
    if chosen is None:
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    if chosen not in PRECISIONS:
        raise ConfigError(
            f"{PRECISION_ENV}={chosen!r} is not a precision; use one of {', '.join(PRECISIONS)}"
        )
    if chosen == "fp16" and not cuda:
        raise ConfigError(f"{PRECISION_ENV}=fp16 needs a GPU; use no or bf16 on the CPU")
    return chosen


def cuda_graphs() -> bool:
    """``$TOXITUNE_CUDA_GRAPHS`` (1 or 0) if set, else on with one GPU: training steps replay CUDA graphs.

    Raises:
        ConfigError: The variable is neither 1 nor 0, or is 1 without a GPU or in several processes.
    """
    cuda = training_device().type == "cuda"
    chosen = os.environ.get(GRAPHS_ENV)
    if chosen is None:
        # DDP reduces gradients in autograd's gradient hooks, which a graphed backward does not run.
        return cuda and PartialState().num_processes == 1
    if chosen not in ("0", "1"):
        raise ConfigError(f"{GRAPHS_ENV}={chosen!r} is neither 1 nor 0; use 1 for CUDA graphs, 0 for none")
    if chosen == "1" and not cuda:
        raise ConfigError(f"{GRAPHS_ENV}=1 needs a GPU; unset it or use 0 on the CPU")
    if chosen == "1" and PartialState().num_processes > 1:
        raise ConfigError(f"{GRAPHS_ENV}=1 cannot train in several processes (DDP); unset it or use 0")
    return chosen == "1"


def make_accelerator() -> Accelerator:
    """An ``Accelerator`` on CUDA if there is a GPU, else on the CPU, with :func:`mixed_precision`."""
    precision = mixed_precision()
    if training_device().type == "cuda":
        # cuDNN's attention sets itself up for every new (batch, width) shape, and dynamic padding
        # makes nearly every width new: on an H100 a first short run spent ~15 s more in attention
        # than a second one, and no more once this was off. The memory-efficient kernel takes any
        # shape at no set-up cost.
        torch.backends.cuda.enable_cudnn_sdp(False)
        # Without autocast, float32 matmuls may still use tensor cores (TF32), as bf16 would.
        torch.backends.cuda.matmul.allow_tf32 = precision == "no"
        # Copies from pinned memory that do not wait: the GPU runs ahead while the next batch arrives.
        loading = DataLoaderConfiguration(non_blocking=True)
        # CUDA graphs must not replay weights cast before their capture (torch's notes on graphs and
        # autocast ask for no cache); a forward pass casts each weight once anyway.
        autocast = AutocastKwargs(cache_enabled=False)
        return Accelerator(mixed_precision=precision, dataloader_config=loading, kwargs_handlers=[autocast])
    return Accelerator(cpu=True, mixed_precision=precision)

"""What a trained classifier costs to ship: parameters, size on disk, and CPU latency and throughput.

Measured under one stated protocol, so figures from different models compare:

- the model folder written by ``trainers.train`` or ``search.train``, loaded on the CPU in float32;
- real texts (a split's), cycled in order, tokenised and padded per batch as the model would be served;
- ``warmup`` untimed forward passes, then ``repeats`` timed ones per batch size, under
  ``torch.inference_mode``; latency is the median (p50) and 95th percentile (p95) per batch;
- ``torch.get_num_threads()`` threads, recorded with the CPU model.

A study with a latency objective times in-memory models instead, under :class:`LatencyProtocol`
(:func:`model_latency_ms`); both share :func:`timed_passes_ms`.

Example:
    >>> efficiency = measure(Path("runs/best/model"), texts)
    >>> efficiency.latency_ms["1"]["p50"], efficiency.examples_per_second
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from trainers.models import load_trained_classifier

BATCH_SIZES = (1, 32)


@dataclass(frozen=True)
class Efficiency:
    """A shipped model's cost.

    Attributes:
        parameters: Every parameter of the shipped model (a LoRA model is shipped merged).
        size_bytes: The model folder's size on disk, tokenizer included.
        latency_ms: By batch size (as text, so it survives JSON): ``{"p50": …, "p95": …}`` per batch.
        examples_per_second: At the largest batch size, from its median latency.
        cpu: The processor, as the operating system names it.
        threads: Torch's CPU threads during the measurement.
        max_length: Tokens kept per text.
        repeats: Timed passes per batch size.
    """

    parameters: int
    size_bytes: int
    latency_ms: dict[str, dict[str, float]]
    examples_per_second: float
    cpu: str
    threads: int
    max_length: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def size_on_disk(folder: Path) -> int:
    """Bytes of every file under ``folder``: what shipping it costs in storage."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@torch.inference_mode()
def timed_passes_ms(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    repeats: int,
    warmup: int,
) -> list[float]:
    """Milliseconds of each of ``repeats`` forward passes of batches of ``batch_size`` texts, after ``warmup``.

    The texts are cycled in order to fill the batches, tokenised and padded per batch as served.
    """
    batches = [
        tokenizer(
            [texts[(start + i) % len(texts)] for i in range(batch_size)],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        for start in range(0, batch_size * (warmup + repeats), batch_size)
    ]
    seconds = []
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        model(**batch)
        if index >= warmup:
            seconds.append(time.perf_counter() - started)
    return [s * 1000 for s in seconds]


@torch.inference_mode()
def measure(
    model_dir: Path,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = 50,
    warmup: int = 5,
) -> Efficiency:
    """Measure the model in ``model_dir`` on ``texts`` under the module's protocol.

    Args:
        model_dir: A folder ``AutoModelForSequenceClassification`` loads (safetensors only).
        texts: Real inputs, cycled in order to fill the batches.
        max_length: Tokens kept per text, as in training.
        batch_sizes: The batch sizes to time.
        repeats: Timed passes per batch size (at least 50 for a stable p95).
        warmup: Untimed passes first, per batch size.
    """
    model = load_trained_classifier(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    latency = {}
    for size in batch_sizes:
        passes = timed_passes_ms(
            model, tokenizer, texts, batch_size=size, max_length=max_length, repeats=repeats, warmup=warmup
        )
        p50, p95 = np.percentile(passes, [50, 95])
        latency[str(size)] = {"p50": float(p50), "p95": float(p95)}
    largest = max(batch_sizes)
    return Efficiency(
        parameters=sum(p.numel() for p in model.parameters()),
        size_bytes=size_on_disk(model_dir),
        latency_ms=latency,
        examples_per_second=largest / (latency[str(largest)]["p50"] / 1000),
        cpu=cpu_name(),
        threads=torch.get_num_threads(),
        max_length=max_length,
        repeats=repeats,
    )


@dataclass(frozen=True)
class LatencyProtocol:
    """How a study times an architecture: one number per shape, comparable across its trials.

    Batches of ``batch_size`` median-length validation texts (:func:`median_length_texts`), on the
    CPU in float32 with ``threads`` torch threads, ``warmup`` untimed passes, then the median of
    ``repeats`` timed ones. The weights do not matter, only the architecture; a LoRA model is timed
    merged, as it ships.
    """

    batch_size: int = 1
    threads: int = 1
    warmup: int = 5
    repeats: int = 30
    max_length: int = 128

    def record(self) -> dict[str, Any]:
        """The protocol and the machine, as a study records them beside its figures."""
        return {**asdict(self), "cpu": cpu_name(), "torch": torch.__version__, "statistic": "median"}


def median_length_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[str]:
    """The texts whose token count is the median of ``texts``' (truncated at ``max_length``).

    Timing texts of one length keeps every pass the same work, so the median is the shape's, not the
    draw's.
    """
    lengths = [
        len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    ]
    median = sorted(lengths)[len(lengths) // 2]
    return [text for text, length in zip(texts, lengths, strict=True) if length == median]


def model_latency_ms(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], protocol: LatencyProtocol
) -> float:
    """The median latency of an in-memory ``model`` on ``texts`` under ``protocol``, in milliseconds.

    The model is timed as it is (move it to the CPU and merge any adapters first); torch's thread
    count is set for the measurement and restored after.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(protocol.threads)
    try:
        passes = timed_passes_ms(
            model.eval(),
            tokenizer,
            texts,
            batch_size=protocol.batch_size,
            max_length=protocol.max_length,
            repeats=protocol.repeats,
            warmup=protocol.warmup,
        )
    finally:
        torch.set_num_threads(threads)
    return float(np.median(passes))

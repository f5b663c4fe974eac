"""Epoch-boundary checkpoints, so an interrupted run continues where it stopped instead of starting over."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.cache import load_tensors, save_tensors
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.evaluate import Metrics


@dataclass
class Checkpoint:
    """The state of a run after ``step`` optimizer steps, at the end of an epoch.

    ``history`` holds :meth:`EvalRecord.to_dict` entries and ``best_index`` points at the best one.
    """

    config: dict[str, Any]
    step: int
    seconds: float
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    sampler_passes: int
    history: list[dict[str, Any]]
    best_index: int | None
    best_state: dict[str, torch.Tensor] | None
    rng: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """The state of every random generator a run draws from, as tensors and plain values.

    numpy's and Python's states are taken apart rather than stored as their own objects, so the
    checkpoint loads with ``torch.load(weights_only=True)``, which runs no code from the file.
    """
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": bit_generator,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generators' state taken by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["bit_generator"],
            numpy["key"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write ``checkpoint`` atomically: an interruption mid-write keeps the previous one."""
    save_tensors(checkpoint.__dict__, path)


def load_checkpoint(path: Path, config: TrainConfig) -> Checkpoint | None:
    """The checkpoint at ``path``, or ``None`` if there is none.

    Raises:
        ConfigError: The file is not a checkpoint this version of toxitune wrote, or it belongs to a
            run with other settings.
    """
    if not path.exists():
        return None
    not_ours = (
        f"{path} is not a checkpoint toxitune wrote (or it is from an older version); "
        "delete it to start the run over"
    )
    try:
        saved = load_tensors(path)
    except ConfigError as error:
        raise ConfigError(not_ours) from error
    validation_fields = {field.name for field in fields(Metrics)}
    if (
        not isinstance(saved, dict)
        or set(saved) != {field.name for field in fields(Checkpoint)}
        or any(set(record["validation"]) != validation_fields for record in saved["history"])
    ):
        raise ConfigError(not_ours)
    checkpoint = Checkpoint(**saved)
    if not config.matches(checkpoint.config):
        raise ConfigError(f"{path} belongs to a run with other settings; delete it or choose another --out")
    return checkpoint

"""Epoch-boundary checkpoints, so an interrupted run continues where it stopped instead of starting over."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.cache import save_tensors
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
    """The state of every random generator a run draws from."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write ``checkpoint`` atomically: an interruption mid-write keeps the previous one."""
    save_tensors(checkpoint.__dict__, path)


def load_checkpoint(path: Path, config: TrainConfig) -> Checkpoint | None:
    """The checkpoint at ``path``, or ``None`` if there is none.

    Raises:
        ConfigError: The checkpoint belongs to a run with other settings.
    """
    if not path.exists():
        return None
    # Our own file, written by save_checkpoint: it holds numpy RNG state, which weights_only refuses.
    saved = torch.load(path, weights_only=False)
    validation_fields = {field.name for field in fields(Metrics)}
    if set(saved) != {field.name for field in fields(Checkpoint)} or any(
        set(record["validation"]) != validation_fields for record in saved.get("history", [])
    ):
        raise ConfigError(
            f"{path} was written by another version of toxitune; delete it to start the run over"
        )
    checkpoint = Checkpoint(**saved)
    if checkpoint.config != config.to_dict():
        raise ConfigError(f"{path} belongs to a run with other settings; delete it or choose another --out")
    return checkpoint

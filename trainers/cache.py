"""Content-addressed disk cache for work that several runs share (tokens, teachers, logits)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from trainers.errors import ConfigError

CACHE_ENV = "TOXITUNE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$TOXITUNE_CACHE_DIR`` if set, else ``~/.cache/toxitune``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "toxitune"))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an inter-process lock for ``path``, so parallel trials compute a shared item once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def save_tensors(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted write never leaves a bad entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_tensors(path: Path) -> Any:
    """Load what :func:`save_tensors` wrote: tensors and plain Python values only.

    ``weights_only=True`` refuses any other object, so a file planted in a run's folder or the cache
    runs no code when it is read.

    Raises:
        ConfigError: The file holds anything else, or is cut short.
    """
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError or EOFError, by what the file holds
        # Not torch's own advice (load it without weights_only): that would run whatever the file holds.
        raise ConfigError(f"{path} is not a file toxitune wrote; delete it and run again") from error

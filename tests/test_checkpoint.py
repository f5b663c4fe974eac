"""Checkpoints load without pickle: a planted file is refused before any of its code runs."""

from __future__ import annotations

import pathlib
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.cache import load_tensors, save_tensors
from trainers.checkpoint import capture_rng, load_checkpoint, restore_rng
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.prepare import prepare_task

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("trainers", "search", "studies", "reports", "benchmarks")
# Ways to unpickle a file, which runs whatever code the file names.
UNPICKLING = re.compile(
    r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|import pickle|from pickle|\bpickle\.|joblib|dill\b"
)


def test_no_package_unpickles_anything():
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNPICKLING.search(line)
    ]
    assert hits == []


class _Payload:
    """Unpickling this creates ``marker``: the code a planted checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_planted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "run" / "checkpoint.pt"
    planted.parent.mkdir()
    torch.save({"model": _Payload(marker)}, planted)
    with pytest.raises(ConfigError, match="is not a checkpoint toxitune wrote") as error:
        load_checkpoint(planted, TrainConfig())
    assert not marker.exists()
    assert "\n" not in str(error.value)


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    save_tensors(capture_rng(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.randn(3), [random.gauss(0, 1) for _ in range(3)])
    restore_rng(load_tensors(tmp_path / "rng.pt"))
    drawn = (torch.rand(3), np.random.randn(3), [random.gauss(0, 1) for _ in range(3)])
    assert torch.equal(drawn[0], expected[0])
    assert np.array_equal(drawn[1], expected[1]) and drawn[2] == expected[2]


def test_a_bad_cache_file_is_a_one_line_error_without_torchs_advice(make_config, cache_dir):
    config = make_config("lora")
    prepare_task(config, cache_dir=cache_dir, progress=False)
    for path in (cache_dir / "tokens").glob("*.pt"):
        path.write_bytes(path.read_bytes()[:100])  # cut short, as a full disk leaves it
    with pytest.raises(ConfigError, match="is not a file toxitune wrote; delete it") as error:
        prepare_task(config, cache_dir=cache_dir, progress=False)
    assert "weights_only" not in str(error.value)

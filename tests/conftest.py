"""Fixtures: a tiny BERT checkpoint saved to disk and small data files, built fresh, offline."""

from __future__ import annotations

import getpass
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

# Tiny models run fastest on one thread, and leave the other core to subprocesses under test.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

WORDS = [
    "good",
    "nice",
    "kind",
    "great",
    "bad",
    "hate",
    "awful",
    "dumb",
    "the",
    "a",
    "is",
    "day",
    "you",
    "movie",
]
TOXIC = {"bad", "hate", "awful", "dumb"}


def save_tiny_checkpoint(folder: Path, *, layers: int = 4, seed: int = 0) -> Path:
    """A 4-layer BERT with a 32-wide hidden state and no classification head, like a hub checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def toy_frame(size: int, seed: int) -> pd.DataFrame:
    """Texts whose label is whether they contain a toxic word; about a third are toxic."""
    rng = random.Random(seed)
    neutral = [w for w in WORDS if w not in TOXIC]
    rows = []
    for i in range(size):
        label = int(i % 3 == 0)
        words = rng.choices(neutral, k=rng.randint(2, 9))
        if label:
            words.insert(rng.randrange(len(words) + 1), rng.choice(sorted(TOXIC)))
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def write_toy_data(folder: Path, sizes=(192, 48, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, size) in enumerate(zip(("train", "validation", "test"), sizes, strict=True)):
        toy_frame(size, seed).to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return write_toy_data(tmp_path_factory.mktemp("toy-data"))


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_checkpoint, toy_data, tmp_path_factory) -> Path:
    """The tiny BERT fine-tuned on the toy data, head included.

    A run ends ``collapsed`` when its best evaluation predicts one class, and the random tiny BERT
    learns too slowly for the few steps tests can afford; runs that start here predict both classes.
    """
    from trainers.config import DataConfig, TeacherConfig, TrainConfig
    from trainers.loop import Status, train
    from trainers.models import save_classifier
    from trainers.prepare import prepare_task

    folder = tmp_path_factory.mktemp("trained-bert")
    config = TrainConfig(
        method="teacher",
        data=DataConfig(dataset=str(toy_data), max_length=32),
        teacher=TeacherConfig(name=str(tiny_checkpoint)),
        epochs=10,
        lr=3e-3,
        batch_size=16,
        patience=0,
    )
    result = train(config, prepare_task(config, cache_dir=folder / "cache", progress=False), progress=False)
    assert result.status is Status.COMPLETED, result.reason
    save_classifier(result.model, AutoTokenizer.from_pretrained(tiny_checkpoint), folder / "model")
    return folder / "model"


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_config(tiny_checkpoint, toy_data):
    """Factory of small, fast TrainConfigs on the tiny checkpoint and toy data."""
    from trainers.config import DataConfig, TeacherConfig, TrainConfig

    def make(method: str = "even", *, data: dict | None = None, teacher: dict | None = None, **overrides):
        return TrainConfig(
            method=method,
            data=DataConfig(dataset=str(toy_data), max_length=32, **(data or {})),
            teacher=TeacherConfig(
                **{
                    "name": str(tiny_checkpoint),
                    "epochs": 10,
                    "lr": 3e-3,
                    "batch_size": 16,
                    **(teacher or {}),
                }
            ),
            **{"epochs": 2, "lr": 1e-3, "batch_size": 16, "eval_batch_size": 32, **overrides},
        )

    return make


@pytest.fixture
def checkpoint_with_head(tiny_checkpoint, tmp_path):
    """Factory of tiny checkpoints whose classification head has a fixed weight and bias."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    def make(weight: float, bias: list[float]) -> Path:
        folder = tmp_path / f"head-{weight}-{bias}"
        model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=len(bias))
        with torch.no_grad():
            model.classifier.weight.fill_(weight)
            model.classifier.bias.copy_(torch.tensor(bias))
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(folder)
        return folder

    return make


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database on 127.0.0.1, dropped after the test (skips without one)."""
    name = f"toxitune_test_{uuid.uuid4().hex[:12]}"
    try:
        subprocess.run(["createdb", "-h", "127.0.0.1", name], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot create a PostgreSQL database: {error}")
    yield f"postgresql://{getpass.getuser()}@127.0.0.1:5432/{name}"
    # --force ends the connections that storages of the test still hold in their pools.
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "--force", name], check=True, capture_output=True, timeout=60
    )

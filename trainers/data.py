"""Reading, splitting, subsampling and tokenising labelled texts.

A source is a hub dataset, a local folder with ``train``/``validation``/``test`` files, or one local
file (CSV, JSONL or Parquet). Sources with a single split get a stratified, seeded 80/10/10 split.
Tokens are cached on disk and padded per batch, never to ``max_length``.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from trainers.cache import fingerprint, load_tensors, locked, save_tensors
from trainers.config import DataConfig
from trainers.device import training_device
from trainers.errors import DataError, DataWarning

SPLITS: tuple[str, ...] = ("train", "validation", "test")
_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_READERS = {
    ".csv": pd.read_csv,
    ".tsv": lambda path: pd.read_csv(path, sep="\t"),
    ".jsonl": lambda path: pd.read_json(path, lines=True),
    ".json": lambda path: pd.read_json(path, lines=True),
    ".parquet": pd.read_parquet,
}


@dataclass(frozen=True)
class PairLayout:
    """A hub dataset whose rows hold one text per class, as in ``nicholasKluge/toxic-text``."""

    split: str
    columns: tuple[str, ...]


HUB_PAIR_LAYOUTS: dict[str, PairLayout] = {
    "nicholasKluge/toxic-text": PairLayout(split="english", columns=("non_toxic", "toxic")),
}


@dataclass(frozen=True)
class Split:
    """Texts with integer labels in ``range(len(label_names))``."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        return Split(tuple(self.texts[i] for i in indices), self.labels[np.asarray(indices, dtype=int)])


@dataclass(frozen=True)
class Splits:
    """The three splits of one data source and the names of its labels."""

    train: Split
    validation: Split
    test: Split
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        """Hash of every text and label, so caches follow the data rather than its path."""
        digest = hashlib.sha256(repr(self.label_names).encode())
        for name in SPLITS:
            split: Split = getattr(self, name)
            digest.update(name.encode())
            for text in split.texts:
                digest.update(text.encode() + b"\0")
            digest.update(split.labels.astype(np.int64).tobytes())
        return digest.hexdigest()[:16]


def load_splits(config: DataConfig, *, batch_size: int) -> Splits:
    """Read ``config.dataset``, split and subsample it, and name its classes.

    The classes are the label values, numbers in numeric order and strings in text order, and they
    are named by the values unless ``config.label_names`` gives names in that order.

    Args:
        config: The data source, columns and subsample sizes.
        batch_size: Training batch size; a training split smaller than one batch is an error.

    Raises:
        DataError: The source is missing or unreadable, a column is missing or empty, there is
            only one class, ``config.label_names`` does not name every class, or the training split
            is smaller than one batch.
    """
    frames = _read_source(config)
    frames = {name: _labelled_frame(frame, config, name) for name, frame in frames.items()}
    label_names, encode = _label_encoding(pd.concat(list(frames.values()))["label"])
    if config.label_names is not None:
        if len(config.label_names) != len(label_names):
            raise DataError(
                f"{config.dataset}: --label-names {','.join(config.label_names)} gives "
                f"{len(config.label_names)} names for the {len(label_names)} classes ({','.join(label_names)}); "
                "give one name per class"
            )
        label_names = config.label_names
    if len(frames) == 1:
        frames = _split_80_10_10(next(iter(frames.values())), config.split_seed)
    sizes = {"train": config.train_size, "validation": config.eval_size, "test": config.test_size}
    splits = {}
    for name in SPLITS:
        frame = frames[name]
        split = Split(tuple(frame["text"]), np.asarray([encode[v] for v in frame["label"]], dtype=np.int64))
        if sizes[name] is not None:
            if sizes[name] > len(split):
                flag = {"train": "--train-size", "validation": "--eval-size", "test": "--test-size"}[name]
                warnings.warn(
                    f"{config.dataset}: {flag} {sizes[name]} exceeds the {len(split)} examples of the {name} "
                    "split; using them all",
                    DataWarning,
                    stacklevel=2,
                )
            split = split.subset(stratified_subsample(split.labels, sizes[name], config.split_seed))
        splits[name] = split
    if len(np.unique(splits["train"].labels)) < 2:
        raise DataError(
            f"{config.dataset}: the training split has only one class; a classifier needs two or more"
        )
    if len(splits["train"]) < batch_size:
        raise DataError(
            f"{config.dataset}: the training split has {len(splits['train'])} examples, fewer than one "
            f"batch of {batch_size}; add data or lower --batch-size"
        )
    for name in ("validation", "test"):
        if len(splits[name]) == 0:
            raise DataError(f"{config.dataset}: the {name} split is empty")
    if len(np.unique(splits["validation"].labels)) < 2:
        # Early stopping, the pruner's ROC AUC and the choice of the best trial would all read noise.
        raise DataError(
            f"{config.dataset}: the validation split has only one class; models cannot be compared on it, "
            "give it examples of every class (or a larger --eval-size)"
        )
    return Splits(label_names=label_names, **splits)


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded subsample of ``size`` items that keeps the class proportions.

    Each class gets its share of ``size`` (largest remainders, then rarer classes, get the rest), drawn at random, so a
    rare class keeps at least its rounded share. Returns every index, in order, when ``size`` is
    at least ``len(labels)``.
    """
    if size >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.lexsort((counts, quota - exact))[: size - quota.sum()]:  # ties go to the rarer class
        quota[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def flatten_pairs(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One example per non-empty cell: the text in ``columns[k]`` gets label ``k``."""
    parts = []
    for label, column in enumerate(columns):
        texts = frame[column].dropna().astype(str)
        texts = texts[texts.str.strip() != ""]
        parts.append(pd.DataFrame({"text": texts.to_numpy(), "label": label}))
    return pd.concat(parts, ignore_index=True)


def _read_source(config: DataConfig) -> dict[str, pd.DataFrame]:
    path = Path(config.dataset).expanduser()
    if path.is_dir():
        return {name: _read_file(_find_split_file(path, name)) for name in SPLITS}
    if path.suffix.lower() in _READERS or path.exists():
        return {"all": _read_file(path)}
    return _read_hub(config)


def _find_split_file(folder: Path, split: str) -> Path:
    for alias in _SPLIT_ALIASES[split]:
        for suffix in _READERS:
            candidate = folder / f"{alias}{suffix}"
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{folder}: no {split} file found; expected {split}.csv, {split}.jsonl or {split}.parquet"
    )


def _read_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass --dataset a data file, a folder or a hub id")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .jsonl or .parquet")
    try:
        return reader(path)
    except Exception as error:  # pandas raises many types for a malformed file
        raise DataError(
            f"{path}: cannot read it ({type(error).__name__}: {error})".splitlines()[0]
        ) from error


def _read_hub(config: DataConfig) -> dict[str, pd.DataFrame]:
    import datasets

    layout = HUB_PAIR_LAYOUTS.get(config.dataset)
    split = config.hub_split or (layout.split if layout else None)
    try:
        loaded = datasets.load_dataset(config.dataset, split=split)
    except Exception as error:  # the hub client raises many types for a missing or offline dataset
        raise DataError(
            f"{config.dataset}: not a local file or folder, and the hub could not load it "
            f"({type(error).__name__}); check the name or pass a local path"
        ) from error
    if isinstance(loaded, datasets.Dataset):
        frame = loaded.to_pandas()
        if layout is not None:
            frame = flatten_pairs(frame, layout.columns)
            frame["label"] = [layout.columns[i] for i in frame["label"]]
            frame = frame.rename(columns={"text": config.text_column, "label": config.label_column})
        return {"all": frame}
    names = {name: next((a for a in _SPLIT_ALIASES[name] if a in loaded), None) for name in SPLITS}
    if all(names.values()):
        return {name: loaded[alias].to_pandas() for name, alias in names.items()}
    if "train" in loaded:
        return {"all": loaded["train"].to_pandas()}
    raise DataError(f"{config.dataset}: no train split; pass --hub-split NAME to choose one")


def _labelled_frame(frame: pd.DataFrame, config: DataConfig, split: str) -> pd.DataFrame:
    for role, column in (("text", config.text_column), ("label", config.label_column)):
        if column not in frame.columns:
            raise DataError(
                f"{config.dataset} ({split}): no {role} column {column!r}; columns are "
                f"{list(frame.columns)}; pass --{role}-column"
            )
    out = pd.DataFrame({"text": frame[config.text_column], "label": frame[config.label_column]})
    no_label = out["label"].isna()
    no_text = out["text"].isna() | (out["text"].astype(str).str.strip() == "")
    out = out[~no_label & ~no_text]
    if out.empty:
        raise DataError(
            f"{config.dataset} ({split}): the {config.text_column!r}/{config.label_column!r} columns "
            "hold no non-empty rows"
        )
    if dropped := len(no_label) - len(out):
        reasons = {"without a label": no_label.sum(), "with an empty text": (no_text & ~no_label).sum()}
        shown = " and ".join(f"{count} {why}" for why, count in reasons.items() if count)
        warnings.warn(
            f"{config.dataset} ({split}): dropped {dropped} of {len(no_label)} rows, {shown}",
            DataWarning,
            stacklevel=2,
        )
    out["text"] = out["text"].astype(str)
    return out.reset_index(drop=True)


def _label_encoding(labels: pd.Series) -> tuple[tuple[str, ...], dict[object, int]]:
    values = labels.unique().tolist()
    numeric = [v for v in values if isinstance(v, (int, float, np.integer, np.floating))]
    if any(not float(v).is_integer() for v in numeric):
        bad = next(v for v in numeric if not float(v).is_integer())
        raise DataError(f"labels must be integers or strings, but got {bad!r}; bin scores into classes first")
    if len(numeric) == len(values):
        ordered = sorted(values, key=float)
    else:
        ordered = sorted(values, key=str)
    if len(ordered) < 2:
        raise DataError(
            f"the label column holds only one class ({ordered[0]!r}); a classifier needs two or more"
        )
    names = tuple(str(int(v)) if isinstance(v, (float, np.floating)) else str(v) for v in ordered)
    return names, {v: i for i, v in enumerate(ordered)}


def _split_80_10_10(frame: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    labels = frame["label"].astype(str).to_numpy()
    order = np.random.default_rng(seed).permutation(len(frame))
    # Dealing each class's shuffled rows out 8:1:1 keeps class proportions in every split, rare classes too.
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for label in np.unique(labels):
        rows = order[labels[order] == label]
        cut_train, cut_val = round(0.8 * len(rows)), round(0.9 * len(rows))
        parts["train"] += rows[:cut_train].tolist()
        parts["validation"] += rows[cut_train:cut_val].tolist()
        parts["test"] += rows[cut_val:].tolist()
    return {name: frame.iloc[sorted(rows)] for name, rows in parts.items()}


@dataclass(frozen=True)
class EncodedSplit:
    """Token ids of each text, unpadded, with their labels."""

    input_ids: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what decides the tokens: the tokenizer's class, vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    return fingerprint(type(tokenizer).__name__, vocab, tokenizer.all_special_tokens)


def encode_split(split: Split, tokenizer, *, max_length: int, cache_dir: Path) -> EncodedSplit:
    """Tokenise ``split`` once; later calls with the same texts, tokenizer and length read the cache."""
    digest = hashlib.sha256(b"\0".join(t.encode() for t in split.texts)).hexdigest()[:16]
    key = fingerprint(digest, tokenizer_fingerprint(tokenizer), max_length)
    path = cache_dir / "tokens" / f"{key}.pt"
    with locked(path):
        if path.exists():
            flat, lengths = load_tensors(path)
        else:
            ids = tokenizer(list(split.texts), truncation=True, max_length=max_length)["input_ids"]
            lengths = torch.tensor([len(row) for row in ids], dtype=torch.int64)
            flat = torch.tensor([token for row in ids for token in row], dtype=torch.int64)
            save_tensors((flat, lengths), path)
    return EncodedSplit(list(torch.split(flat, lengths.tolist())), torch.as_tensor(split.labels))


class _Indexed(Dataset):
    def __init__(self, encoded: EncodedSplit) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> int:
        return index


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of similar length, so per-batch padding wastes little compute.

    Shuffled: indices are shuffled, cut into windows of ``50 * batch_size``, sorted by length inside
    each window and batched; batch order is shuffled again. Each pass draws a new order from
    ``seed`` and the pass number, so a run is reproducible. Unshuffled: longest first, in order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.passes = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            yield from (
                order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)
            )
            return
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        order = rng.permutation(len(self.lengths))
        window = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [
                chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)
            ]
        yield from (batches[i] for i in rng.permutation(len(batches)))


def make_loader(
    encoded: EncodedSplit,
    *,
    batch_size: int,
    pad_token_id: int,
    shuffle: bool,
    seed: int = 0,
    width_multiple: int = 1,
) -> DataLoader:
    """A loader of dicts with ``input_ids``, ``attention_mask``, ``labels`` and ``index``.

    ``index`` is each example's position in the split, used to look up cached teacher logits.
    Each batch is padded to its longest text, rounded up to a multiple of ``width_multiple``.
    Batches are pinned when training on a GPU, so they travel there without making the host wait.
    """

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [encoded.input_ids[i] for i in indices]
        lengths = torch.tensor([len(row) for row in rows])
        longest = int(lengths.max())
        width = -(-longest // width_multiple) * width_multiple
        # One C++ call instead of a Python loop over rows: on a GPU the host's time is the step's time.
        input_ids = F.pad(
            pad_sequence(rows, batch_first=True, padding_value=pad_token_id),
            (0, width - longest),
            value=pad_token_id,
        )
        attention_mask = (torch.arange(width) < lengths[:, None]).long()
        index = torch.tensor(indices, dtype=torch.int64)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": encoded.labels[index],
            "index": index,
        }

    sampler = LengthGroupedBatches(
        [len(row) for row in encoded.input_ids], batch_size, shuffle=shuffle, seed=seed
    )
    pin_memory = training_device().type == "cuda"
    return DataLoader(_Indexed(encoded), batch_sampler=sampler, collate_fn=collate, pin_memory=pin_memory)

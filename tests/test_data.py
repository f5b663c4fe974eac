from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from studies.presets import load_preset
from trainers.cli import merge
from trainers.config import DataConfig, TrainConfig
from trainers.data import (
    LengthGroupedBatches,
    encode_split,
    flatten_pairs,
    load_splits,
    make_loader,
    stratified_subsample,
)
from trainers.errors import DataError, DataWarning


def test_flatten_pairs_keeps_every_non_empty_text_with_its_column_label():
    frame = pd.DataFrame({"non_toxic": ["hello", "", None, "fine"], "toxic": ["ugly", "mean", "  ", None]})
    flat = flatten_pairs(frame, ("non_toxic", "toxic"))
    assert sorted(zip(flat["text"], flat["label"], strict=True)) == [
        ("fine", 0),
        ("hello", 0),
        ("mean", 1),
        ("ugly", 1),
    ]


def test_single_file_gets_a_stratified_seeded_80_10_10_split(tmp_path):
    labels = ["spam"] * 300 + ["ham"] * 600 + ["eggs"] * 100
    pd.DataFrame({"body": [f"text {i}" for i in range(1000)], "kind": labels}).to_json(
        tmp_path / "all.jsonl", orient="records", lines=True
    )
    config = DataConfig(dataset=str(tmp_path / "all.jsonl"), text_column="body", label_column="kind")
    splits = load_splits(config, batch_size=8)
    assert splits.label_names == ("eggs", "ham", "spam")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (800, 100, 100)
    for split in (splits.train, splits.validation, splits.test):
        assert np.bincount(split.labels).tolist() == [
            len(split) // 10,
            6 * len(split) // 10,
            3 * len(split) // 10,
        ]
    all_texts = splits.train.texts + splits.validation.texts + splits.test.texts
    assert len(set(all_texts)) == 1000
    again = load_splits(config, batch_size=8)
    assert again.test.texts == splits.test.texts
    other_seed = load_splits(DataConfig(**{**config.__dict__, "split_seed": 7}), batch_size=8)
    assert other_seed.test.texts != splits.test.texts


def test_subsampling_is_stratified_and_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    chosen = stratified_subsample(labels, 100, seed=3)
    assert len(set(chosen.tolist())) == 100
    assert np.bincount(labels[chosen]).tolist() == [70, 30]
    assert np.array_equal(chosen, stratified_subsample(labels, 100, seed=3))
    assert not np.array_equal(chosen, stratified_subsample(labels, 100, seed=4))
    assert np.array_equal(stratified_subsample(labels, 5000, seed=3), np.arange(1000))


@pytest.mark.parametrize(
    ("labels", "size", "counts"),
    [
        ([0] * 500 + [1] * 500, 999, [500, 499]),
        ([0] * 98 + [1] * 1 + [2] * 1, 50, [49, 1, 0]),
        ([0] * 90 + [1] * 10, 5, [4, 1]),
    ],
)
def test_subsampling_never_fails_on_rare_classes(labels, size, counts):
    labels = np.array(labels)
    chosen = stratified_subsample(labels, size, seed=0)
    assert len(chosen) == size and np.bincount(labels[chosen], minlength=len(counts)).tolist() == counts


def test_a_single_file_with_a_rare_class_still_splits(tmp_path):
    rows = (
        [("a", f"t{i}") for i in range(40)]
        + [("b", f"u{i}") for i in range(40)]
        + [("c", f"v{i}") for i in range(3)]
    )
    pd.DataFrame(rows, columns=["label", "text"]).to_csv(tmp_path / "all.csv", index=False)
    splits = load_splits(DataConfig(dataset=str(tmp_path / "all.csv")), batch_size=4)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 83
    assert splits.label_names == ("a", "b", "c") and 2 in splits.train.labels


def test_folder_sizes_subsample_each_split(toy_data):
    splits = load_splits(
        DataConfig(dataset=str(toy_data), train_size=30, eval_size=12, test_size=9), batch_size=8
    )
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 12, 9)
    assert splits.label_names == ("0", "1")
    assert np.bincount(splits.train.labels).tolist() == [20, 10]


def test_parquet_folder_with_dev_split_and_integer_labels(tmp_path):
    for name, size in (("train", 40), ("dev", 10), ("test", 10)):
        pd.DataFrame(
            {"text": [f"t{i}" for i in range(size)], "label": [i % 3 for i in range(size)]}
        ).to_parquet(tmp_path / f"{name}.parquet")
    splits = load_splits(DataConfig(dataset=str(tmp_path)), batch_size=4)
    assert splits.label_names == ("0", "1", "2")
    assert len(splits.validation) == 10


def test_tokenisation_is_cached_and_reused(tiny_checkpoint, toy_data, cache_dir):
    class CountingTokenizer:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __call__(self, *args, **kwargs):
            self.calls += 1
            return self.inner(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    tokenizer = CountingTokenizer(AutoTokenizer.from_pretrained(tiny_checkpoint))
    split = load_splits(DataConfig(dataset=str(toy_data)), batch_size=8).train
    first = encode_split(split, tokenizer, max_length=16, cache_dir=cache_dir)
    second = encode_split(split, tokenizer, max_length=16, cache_dir=cache_dir)
    assert tokenizer.calls == 1
    assert all(torch.equal(a, b) for a, b in zip(first.input_ids, second.input_ids, strict=True))
    assert first.input_ids[0].tolist() == tokenizer.inner(split.texts[0])["input_ids"]
    encode_split(split, tokenizer, max_length=8, cache_dir=cache_dir)
    assert tokenizer.calls == 2, "another max_length must not reuse the cache"


def test_length_grouped_batches_cover_every_index_once_and_are_reproducible():
    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    sampler = LengthGroupedBatches(lengths, 16, shuffle=True, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert first != second, "each pass draws a new order"
    assert list(LengthGroupedBatches(lengths, 16, shuffle=True, seed=1)) == first
    spread = np.mean([np.ptp(lengths[batch]) for batch in first])
    assert spread < 10, "batches group texts of similar length"


def test_loader_pads_each_batch_to_its_longest_text(tiny_checkpoint, toy_data, cache_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    split = load_splits(DataConfig(dataset=str(toy_data)), batch_size=8).train
    encoded = encode_split(split, tokenizer, max_length=64, cache_dir=cache_dir)
    for batch in make_loader(encoded, batch_size=8, pad_token_id=0, shuffle=False):
        lengths = batch["attention_mask"].sum(dim=1)
        assert batch["input_ids"].shape[1] == lengths.max() < 64
        assert torch.equal(batch["labels"], encoded.labels[batch["index"]])


def test_loader_rounds_widths_up_to_the_multiple_it_is_given(tiny_checkpoint, toy_data, cache_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    split = load_splits(DataConfig(dataset=str(toy_data)), batch_size=8).train
    encoded = encode_split(split, tokenizer, max_length=64, cache_dir=cache_dir)
    widths = set()
    for batch in make_loader(encoded, batch_size=8, pad_token_id=0, shuffle=False, width_multiple=4):
        lengths = batch["attention_mask"].sum(dim=1)
        width = batch["input_ids"].shape[1]
        assert width % 4 == 0 and width - 4 < lengths.max() <= width
        # The extra columns are padding, masked out.
        for row, index in zip(batch["input_ids"], batch["index"].tolist(), strict=True):
            text = encoded.input_ids[index]
            assert torch.equal(row[: len(text)], text) and (row[len(text) :] == 0).all()
        widths.add(width)
    assert len(widths) >= 2, "the toy texts span more than one width bucket"


def _write(path, text):
    path.write_text(text)
    return path


def _one_class_validation(folder):
    _write(folder / "train.csv", "text,label\n" + "a,0\nb,1\n" * 4)
    _write(folder / "validation.csv", "text,label\n" + "a,0\n" * 4)
    _write(folder / "test.csv", "text,label\na,0\nb,1\n")
    return folder


@pytest.mark.parametrize(
    ("make_source", "config_kwargs", "batch_size", "message"),
    [
        (lambda d: d / "missing.csv", {}, 4, "file not found"),
        (lambda d: d, {}, 4, "no train file found"),
        (lambda d: _write(d / "x.parquet", "not parquet"), {}, 4, "cannot read"),
        (lambda d: _write(d / "x.xlsx", "a"), {}, 4, "unsupported file type"),
        (lambda d: _write(d / "x.csv", "body,label\nhi,0\n"), {}, 4, "no text column 'text'"),
        (lambda d: _write(d / "x.csv", "text,kind\nhi,0\n"), {}, 4, "no label column 'label'"),
        (lambda d: _write(d / "x.csv", "text,label\n,0\n,1\n"), {}, 4, "hold no non-empty rows"),
        (lambda d: _write(d / "x.csv", "text,label\nhi,\nyo,\n"), {}, 4, "hold no non-empty rows"),
        (lambda d: _write(d / "x.csv", "text,label\n" + "a,0\n" * 40), {}, 4, "only one class"),
        (lambda d: _write(d / "x.csv", "text,label\n" + "a,0.5\nb,1\n" * 20), {}, 4, "integers or strings"),
        (lambda d: _write(d / "x.csv", "text,label\n" + "a,0\nb,1\n" * 20), {}, 64, "fewer than one batch"),
        (_one_class_validation, {}, 4, "the validation split has only one class"),
    ],
    ids=[
        "missing-file",
        "folder-without-train",
        "unreadable",
        "bad-type",
        "no-text",
        "no-label",
        "empty-text",
        "empty-label",
        "one-class",
        "float-labels",
        "smaller-than-batch",
        "one-class-validation",
    ],
)
def test_bad_data_is_a_one_line_data_error(tmp_path, make_source, config_kwargs, batch_size, message):
    source = make_source(tmp_path)
    with pytest.raises(DataError, match=message) as error:
        load_splits(DataConfig(dataset=str(source), **config_kwargs), batch_size=batch_size)
    assert "\n" not in str(error.value)


def test_rows_dropped_for_a_missing_label_or_text_are_counted_in_one_warning(tmp_path):
    rows = "a,0\nb,1\n" * 10 + "c,\nd,NA\n,1\n  ,0\n"
    source = _write(tmp_path / "x.csv", "text,label\n" + rows)
    with pytest.warns(DataWarning) as caught:
        splits = load_splits(DataConfig(dataset=str(source)), batch_size=4)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{source} (all): dropped 4 of 24 rows, 2 without a label and 2 with an empty text"
    )
    assert sum(map(len, (splits.train, splits.validation, splits.test))) == 20


def test_a_data_warning_is_one_line_on_the_command_line(tmp_path, toy_data):
    folder = tmp_path / "data"
    shutil.copytree(toy_data, folder)
    frame = pd.read_csv(folder / "train.csv")
    frame.loc[:9, "label"] = None
    frame.to_csv(folder / "train.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-m", "trainers.train", "--dataset", str(folder), "--out", str(tmp_path / "o"),
         "--teacher", str(tmp_path / "no-teacher")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"warning: {folder} (train): dropped 10 of 192 rows, 10 without a label", lines
    assert len(lines) == 2 and lines[1].startswith("error: "), (
        "the data loaded, then the missing teacher stopped it"
    )


def test_label_names_replace_the_label_values_in_order(toy_data):
    splits = load_splits(DataConfig(dataset=str(toy_data), label_names=("clean", "toxic")), batch_size=8)
    assert splits.label_names == ("clean", "toxic")
    with pytest.raises(DataError, match=r"--label-names toxic gives 1 names for the 2 classes \(0,1\)"):
        load_splits(DataConfig(dataset=str(toy_data), label_names=("toxic",)), batch_size=8)


def test_the_tweeteval_preset_names_its_classes():
    preset = load_preset("tweeteval")
    config = TrainConfig.from_dict(merge(TrainConfig().to_dict(), preset.config))
    assert config.data.label_names == ("not-offensive", "offensive")
    if Path(config.data.dataset).is_dir():  # the shared data beside the repository: one name per class
        assert load_splits(config.data, batch_size=8).label_names == config.data.label_names


def test_a_subsample_larger_than_its_split_says_so(toy_data):
    with pytest.warns(DataWarning, match="--eval-size 1000 exceeds the 48 examples of the validation split"):
        splits = load_splits(DataConfig(dataset=str(toy_data), eval_size=1000), batch_size=8)
    assert len(splits.validation) == 48


def test_a_presets_relative_dataset_is_resolved_against_its_file_even_when_missing(tmp_path):
    (tmp_path / "p.toml").write_text('[config.data]\ndataset = "../elsewhere/data"\n')
    assert load_preset(str(tmp_path / "p.toml")).config["data"]["dataset"] == str(
        tmp_path.parent / "elsewhere" / "data"
    )

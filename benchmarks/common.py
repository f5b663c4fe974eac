"""Pieces every benchmark shares: where the repo is, default data and teacher, machine facts."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from search.api import StudyConfig, TrainConfig, run_study
from search.train import prepare_seed
from studies.spaces import SearchSpace
from trainers.cli import merge, quiet_libraries
from trainers.device import mixed_precision

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tweeteval-offensive"
DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--teacher`` and ``--json``, the same in every benchmark."""
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"dataset (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--teacher", default=DEFAULT_TEACHER, help=f"teacher checkpoint (default: {DEFAULT_TEACHER})"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


SUBSET_FLAGS = ("train_size", "eval_size", "test_size", "max_length")


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the benchmarks that run studies: data subsets (passed on), work and cache folders."""
    parser.add_argument("--train-size", type=int, help="stratified subsample of the training split")
    parser.add_argument("--eval-size", type=int, help="stratified subsample of the validation split")
    parser.add_argument("--test-size", type=int, help="stratified subsample of the test split")
    parser.add_argument("--max-length", type=int, help="tokens kept per text (default: the config's)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep studies and runs here; rerunning with it resumes an interrupted benchmark",
    )
    parser.add_argument("--cache-dir", type=Path, help="share tokens and teachers between runs")


def cache_folder(args: argparse.Namespace, workdir: Path) -> Path:
    """``--cache-dir``, else the work folder's own cache, shared by its studies and runs."""
    return args.cache_dir or workdir / "cache"


def add_top_k_argument(parser: argparse.ArgumentParser, flag: str, *, prefix: str = "") -> None:
    """``flag``: how many of a study's best trials to retrain, as ``search.train --top-k`` does."""
    parser.add_argument(
        flag,
        type=int,
        default=1,
        help=f"{prefix}retrain the K best trials and score the one with the best mean validation "
        "over the seeds, as search.train picks its winner (default: 1)",
    )


def add_jobs_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--jobs``: worker processes, each with an equal share of the cores."""
    parser.add_argument("--jobs", type=int, default=1, help=f"worker processes: {what} (default: 1)")


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` fresh worker processes, each with an equal share of this machine's cores.

    Spawned, not forked: a forked copy of a process that has already used torch's threads can hang.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # The pool does not name its workers publicly (before Python 3.14): they are the children it adds.
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(threads,)
    )
    try:
        yield pool
    except BaseException:
        # On Ctrl-C or an error, start nothing more and stop what runs: a worker outlives the exception
        # its task raised and would take the next one. Finished work is on disk; a rerun resumes.
        pool.shutdown(wait=False, cancel_futures=True)
        while workers := set(multiprocessing.active_children()) - others:  # the pool may be starting one
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.join()
        raise
    pool.shutdown()


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet_libraries()  # as run_main does in the parent, which a spawned worker does not run


def wait_all(futures: Iterable[Future]) -> None:
    """Wait for every future in turn; the first error is raised here."""
    for future in futures:
        future.result()


def submit_seed_runs(
    pool: ProcessPoolExecutor, candidates: Iterable[dict[str, Any]], seeds: int, *, out: Path, cache_dir: Path
) -> list[Future]:
    """Train each export candidate's ``seeds`` seeds in ``pool``, for ``search.train`` to read from ``out``."""
    return [
        pool.submit(prepare_seed, candidate, seed, out=out, cache_dir=cache_dir)
        for candidate in candidates
        for seed in range(candidate["config"]["seed"], candidate["config"]["seed"] + seeds)
    ]


def base_config(method: str, args: argparse.Namespace, **settings: Any) -> TrainConfig:
    """``method``'s training settings on the benchmark's data and teacher, with its subset arguments.

    Args:
        method: ``odd``, ``even`` or ``lora``.
        args: The benchmark's arguments (``--data``, ``--teacher`` and the subset flags).
        settings: More training settings, as :meth:`TrainConfig.to_dict` names them.
    """
    data = {"dataset": args.data} | {
        name: getattr(args, name) for name in SUBSET_FLAGS if getattr(args, name) is not None
    }
    values = merge(TrainConfig(method=method).to_dict(), {"data": data, "teacher": {"name": args.teacher}})
    return TrainConfig.from_dict(merge(values, settings))


def run_study_in_worker(
    study: StudyConfig, base: TrainConfig, space: SearchSpace | None, cache_dir: Path
) -> None:
    """:func:`search.api.run_study` without progress lines, returning nothing, for a worker pool."""
    run_study(study, base, space=space, cache_dir=cache_dir, progress=False)


@contextlib.contextmanager
def working_folder(workdir: Path | None) -> Iterator[Path]:
    """``workdir`` (created if missing, kept afterwards), or a temporary folder removed at the end."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def mean_of(values: list[float | None]) -> float | None:
    """The mean of the known values (``None`` is a run that produced none), or ``None`` if none is known."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2``: distinct comma-separated integers, as an argparse type."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a seed")
    return seeds


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version, threads, GPU and precision: what a figure was measured on."""
    from trainers.efficiency import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "precision": mixed_precision(),
    }


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))

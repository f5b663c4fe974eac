"""Serving under load: ``python -m reports.serve`` answering ``POST /api/predict`` for 1, 8 and 32 clients.

For each model a server is started on 127.0.0.1 (a free port; nothing leaves the machine). At each
concurrency level, that many clients each send one validation text, wait for the answer and send the
next, until ``--requests`` requests are answered or ``--seconds`` pass, after a few untimed warm-up
requests. Printed per level: requests per second, p50 and p95 latency, and errors (any answer but 200,
or a failed connection), which should be 0. The clients run in this process, on the same cores as
the server.

The models are the 3-layer student made of the teacher's odd layers and the full-depth teacher, each
with a fresh classification head (speed does not depend on the weights), or the folders given with
``--model``.

    python benchmarks/serve.py --requests 500 --seconds 60 --json serve.json
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, add_data_arguments, machine, working_folder, write_json  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.errors import ConfigError  # noqa: E402

CONCURRENCY = (1, 8, 32)
WARMUP_REQUESTS = 8
LABELS = ("not-offensive", "offensive")


def build_models(teacher: str, folder: Path) -> dict[str, Path]:
    """The odd-layer student and the full-depth teacher, saved under ``folder`` as shipped models are."""
    from trainers.models import build_student, load_classifier, load_tokenizer, save_classifier

    model = load_classifier(teacher, LABELS)
    tokenizer = load_tokenizer(teacher)
    student = build_student(model, "odd")
    models = {}
    for role, classifier in (("student", student), ("full depth", model)):
        name = f"{classifier.config.num_hidden_layers}-layer {role}"
        save_classifier(classifier, tokenizer, folder / name.replace(" ", "-"))
        models[name] = folder / name.replace(" ", "-")
    return models


@contextlib.contextmanager
def running_server(model: Path, threads: int | None = None) -> Iterator[str]:
    """``python -m reports.serve --model model`` on a free port of 127.0.0.1; its base URL.

    Args:
        model: The model folder.
        threads: Torch's CPU threads in the server (``OMP_NUM_THREADS``); default: torch's choice.
    """
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "reports.serve", "--model", str(model), "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        if match is None:
            process.kill()
            raise ConfigError(f"the server did not start: {process.communicate()[1].strip() or line}")
        yield match[1]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


async def load(
    url: str, texts: Sequence[str], *, clients: int, requests: int, seconds: float
) -> dict[str, Any]:
    """``clients`` clients sending texts in turn until ``requests`` answers or ``seconds`` pass.

    A failed request during the untimed warm-up counts as an error too.
    """
    import httpx

    errors = 0

    async def send(
        http: httpx.AsyncClient, numbers: Iterator[int], count: int, deadline: float
    ) -> list[float]:
        nonlocal errors
        seconds_taken = []
        while (number := next(numbers)) < count and time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await http.post("/api/predict", json={"text": texts[number % len(texts)]})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                seconds_taken.append(time.perf_counter() - started)
            else:
                errors += 1
        return seconds_taken

    async def phase(http: httpx.AsyncClient, count: int) -> tuple[list[float], float]:
        numbers, started = itertools.count(), time.perf_counter()
        per_client = await asyncio.gather(
            *(send(http, numbers, count, started + seconds) for _ in range(clients))
        )
        return [latency for latencies in per_client for latency in latencies], time.perf_counter() - started

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await phase(http, WARMUP_REQUESTS)
        latencies, elapsed = await phase(http, requests)
    p50, p95 = np.percentile(np.asarray(latencies) * 1000, [50, 95]) if latencies else (float("nan"),) * 2
    return {
        "clients": clients,
        "answered": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
    }


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python benchmarks/serve.py", description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--model", type=Path, action="append", help="a model folder to serve (repeatable; default: "
        "the teacher's 3-layer odd student and the full-depth teacher)"
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=500, help="answers per level (default: 500)")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="at most this long per level (default: 60)"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=CONCURRENCY,
        help="clients per level, comma-separated (default: 1,8,32)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads in the server (default: torch's, one per core); on a machine another job "
        "keeps busy, 1 avoids threads waiting for each other",
    )
    parser.add_argument("--workdir", type=Path, help="keep the built models here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests < 1 or args.seconds <= 0 or min(args.concurrency) < 1:
        raise ConfigError("--requests, --seconds and every --concurrency level must be positive")
    from trainers.config import DataConfig
    from trainers.data import load_splits

    texts = load_splits(DataConfig(dataset=args.data), batch_size=1).validation.texts
    figures: dict[str, Any] = {
        "machine": machine(),
        "server_threads": args.threads,
        "requests": args.requests,
        "seconds": args.seconds,
    }
    with working_folder(args.workdir) as folder:
        models = (
            {str(path): path for path in args.model} if args.model else build_models(args.teacher, folder)
        )
        for name, path in models.items():
            with running_server(path, args.threads) as url:
                levels = [
                    asyncio.run(load(url, texts, clients=n, requests=args.requests, seconds=args.seconds))
                    for n in args.concurrency
                ]
            figures[name] = levels
            for level in levels:
                print(
                    f"{name}: {level['clients']:>2} clients, {level['requests_per_second']:7.1f} requests/s, "
                    f"p50 {level['p50_ms']:7.1f} ms, p95 {level['p95_ms']:7.1f} ms, "
                    f"{level['answered']} answered in {level['seconds']:.1f} s, {level['errors']} errors"
                )
    write_json(args.json, figures)
    return 1 if any(level["errors"] for name in models for level in figures[name]) else 0


if __name__ == "__main__":
    run_main(main)

"""Pieces every benchmark shares: where the repo is, default data and teacher, machine facts."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

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


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and threads: what a figure was measured on."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))

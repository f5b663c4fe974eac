"""Reading W&B offline runs back, through wandb's own record inspector (``wandb leet inspect --json``)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    """What an offline run recorded; W&B's own ``_``-keys are left out of config and summary."""

    path: Path
    name: str
    group: str
    job_type: str
    tags: tuple[str, ...]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    exit_code: int | None

    def table(self, key: str) -> list[dict[str, Any]]:
        """The rows of the table logged under ``key``, as dicts keyed by column."""
        # The inspector names a nested summary value by its dotted path.
        table = json.loads((self.path / "files" / self.summary[f"{key}.path"]).read_text())
        return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def find_runs(wandb_dir: Path) -> list[Path]:
    """The offline run folders W&B wrote under ``wandb_dir``, in the order they started."""
    return sorted(wandb_dir.glob("wandb/offline-run-*"), key=lambda path: path.name)


def read_run(run_dir: Path, *, timeout: float = 10.0) -> Run:
    """The run in ``run_dir``, once its exit record is written (``finish()`` returns before that)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _records(next(run_dir.glob("*.wandb")))
        if any(record["type"] == "exit" for record in records) or time.monotonic() > deadline:
            return _run(run_dir, records)
        time.sleep(0.2)


def _records(path: Path) -> list[dict[str, Any]]:
    printed = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]


def _run(run_dir: Path, records: list[dict[str, Any]]) -> Run:
    run = next(record["run"] for record in records if record["type"] == "run")
    config, summary, history, exit_code = {}, {}, [], None
    for record in records:
        kind = record["type"]
        if kind in ("run", "config"):
            config.update(
                record[kind]["config"].get("update", {}) if kind == "run" else record[kind].get("update", {})
            )
        elif kind == "summary":
            summary.update(record["summary"].get("update", {}))
        elif kind == "history":
            history.append(record["history"]["item"])
        elif kind == "exit":
            exit_code = record["exit"].get("exit_code", 0)
    return Run(
        path=run_dir,
        name=run.get("display_name", ""),
        group=run.get("run_group", ""),
        job_type=run.get("job_type", ""),
        tags=tuple(run.get("tags", ())),
        config={key: value for key, value in config.items() if not key.startswith("_")},
        history=history,
        summary={key: value for key, value in summary.items() if not key.startswith("_")},
        exit_code=exit_code,
    )

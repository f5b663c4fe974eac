"""Weights & Biases tracking for a study: one run per trial, grouped by study, plus a summary run.

This is the only module that imports wandb, and it imports it lazily, so a study with tracking
``"disabled"`` never loads it. Tracking is best effort: any W&B error prints one warning and turns
tracking off for the rest of the study, and never stops a trial.

Offline runs are written to ``<dir>/wandb/offline-run-*`` and can be read back without W&B's servers
with :func:`find_offline_runs` and :func:`read_offline_run`, or uploaded later with ``wandb sync``.

Example::

    tracker = StudyTracker(WandbSettings(mode="offline"), study_name="odd-1", method="odd")
    tracker.start_trial(0, config=asdict(config), params=trial.params)
    train(config, on_eval=lambda record: tracker.log_eval(record.to_dict()))
    tracker.finish_trial("complete", {"value": 0.81, "best_epoch": 3})
    tracker.log_study([{"number": 0, "state": "complete", "value": 0.81}], best_value=0.81, best_trial=0)
"""

from __future__ import annotations

import contextlib
import functools
import json
import netrc
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, get_args
from urllib.parse import urlsplit

from search.storage import redact

WandbMode = Literal["online", "offline", "disabled"]

MODES: tuple[str, ...] = get_args(WandbMode)
DEFAULT_BASE_URL = "https://api.wandb.ai"

# Scalars of an EvalRecord dict: W&B key -> path in the record.
EVAL_KEYS: dict[str, tuple[str, ...]] = {
    "train/loss": ("train_loss",),
    "train/cls": ("train_cls",),
    "train/div": ("train_div",),
    "train/cos": ("train_cos",),
    "val/loss": ("validation", "loss"),
    "val/accuracy": ("validation", "accuracy"),
    "val/weighted_f1": ("validation", "weighted_f1"),
    "val/macro_f1": ("validation", "macro_f1"),
    "val/roc_auc": ("validation", "roc_auc"),
    "epoch": ("epoch",),
}


@dataclass(frozen=True)
class WandbSettings:
    """Where and how a study is tracked.

    Args:
        project: W&B project.
        entity: W&B user or team; ``None`` uses the account's default.
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; ``None`` picks one with :func:`resolve_mode`.
        dir: folder under which W&B writes its ``wandb/`` folder; ``None`` is the current directory.
    """

    project: str = "toxitune"
    entity: str | None = None
    mode: WandbMode | None = None
    dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.project:
            raise ValueError(f"project must be a non-empty name, but got {self.project!r}")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} or None, but got {self.mode!r}")
        if self.dir is not None and not isinstance(self.dir, Path):
            object.__setattr__(self, "dir", Path(self.dir))


def resolve_mode(mode: WandbMode | None) -> WandbMode:
    """The mode to run W&B in, without ever prompting for a login.

    An explicit ``mode`` wins, then the ``WANDB_MODE`` environment variable; otherwise ``"online"``
    when an API key is available (``WANDB_API_KEY``, or a netrc entry for the W&B host) and
    ``"offline"`` when not.

    Args:
        mode: the mode asked for, or ``None`` to choose.
    """
    if mode is not None:
        return mode
    from_env = os.environ.get("WANDB_MODE", "").strip().lower()
    if from_env == "dryrun":
        return "offline"
    if from_env in MODES:
        return from_env  # type: ignore[return-value]
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    # The same file and host that wandb's own login reads.
    if os.environ.get("NETRC"):
        path = Path(os.environ["NETRC"]).expanduser()
    else:
        path = next(
            (p for p in (Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()) if p.exists()),
            Path("~/.netrc").expanduser(),
        )
    host = urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)).netloc
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


P = ParamSpec("P")
R = TypeVar("R")


def _never_raises(
    method: Callable[Concatenate[StudyTracker, P], R],
) -> Callable[Concatenate[StudyTracker, P], R | None]:
    """A tracker method that does nothing once tracking is off and turns tracking off on any error."""

    @functools.wraps(method)
    def wrapper(self: StudyTracker, *args: P.args, **kwargs: P.kwargs) -> R | None:
        if not self.enabled:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # tracking must never stop a trial
            self._turn_off(error)
            return None

    return wrapper


class StudyTracker:
    """One W&B run per trial, grouped by study.

    Never raises: a W&B error (an import error included) prints one ``warning: W&B tracking off: ...``
    line on stderr and turns tracking off for the rest of the study. With mode ``"disabled"`` every
    method is a no-op and wandb is never imported.

    Args:
        settings: project, entity, mode and folder.
        study_name: the W&B group of the study's runs and the prefix of their names.
        method: the training method (``odd``, ``even``, ``lora``...), used as the runs' job type and tag.
        tags: more tags for every run.
    """

    def __init__(
        self, settings: WandbSettings, *, study_name: str, method: str, tags: Sequence[str] = ()
    ) -> None:
        if not study_name:
            raise ValueError(f"study_name must be a non-empty name, but got {study_name!r}")
        if not method:
            raise ValueError(f"method must be a non-empty name, but got {method!r}")
        self.settings = settings
        self.study_name = study_name
        self.method = method
        self.tags = [method, *(tag for tag in tags if tag != method)]
        self.mode = resolve_mode(settings.mode)
        self.enabled = self.mode != "disabled"
        self._wandb: Any = None
        self._run: Any = None

    @_never_raises
    def start_trial(self, number: int, config: dict[str, Any], params: dict[str, Any]) -> str | None:
        """Start the run of trial ``number``; return its W&B path (``entity/project/id``), if tracking.

        A previous trial's run left open is finished as failed first.

        Args:
            number: the trial number.
            config: the training configuration, as a JSON-friendly dict.
            params: the trial's sampled hyperparameters.
        """
        if self._run is not None:
            self.finish_trial("failed", {"reason": "the next trial started before this one finished"})
        self._run = self._init(
            job_type=self.method,
            name=f"{self.study_name}-trial-{number}",
            config={**config, "trial_params": params, "trial_number": number},
        )
        return "/".join(part for part in (self._run.entity, self._run.project, self._run.id) if part)

    @_never_raises
    def log_eval(self, record: dict[str, Any]) -> None:
        """Log one evaluation of the current trial at its training step.

        Args:
            record: an ``EvalRecord.to_dict()``: ``step``, ``epoch``, ``train_*`` losses and ``validation``.
        """
        if self._run is None:
            return
        row = {}
        for key, path in EVAL_KEYS.items():
            value = _lookup(record, path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[key] = value
        self._run.log(row, step=int(record["step"]))

    @_never_raises
    def finish_trial(self, state: str, summary: dict[str, Any]) -> None:
        """Finish the current trial's run, with exit code 1 when it failed.

        Args:
            state: how the trial ended: one of ``complete``, ``pruned``, ``collapsed``, ``diverged``, ``failed``.
            summary: scalars to keep in the run's summary (``value``, ``best_epoch``, ``reason``...);
                ``None`` and non-scalar values are left out.
        """
        run, self._run = self._run, None
        if run is None:
            return
        run.summary["state"] = state
        for key, value in summary.items():
            if _is_scalar(value):
                run.summary[key] = value
        run.finish(exit_code=1 if state == "failed" else 0)

    @_never_raises
    def log_study(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        best_value: float | None = None,
        best_trial: int | None = None,
    ) -> None:
        """Log the study's trials as a table ``trials`` in a run of its own.

        Args:
            rows: one dict per trial (number, state, value, parameters...); the table's columns are the
                union of their keys, and lists or dicts are stored as JSON text.
            best_value: the best trial's objective value, kept in the run's summary.
            best_trial: the best trial's number, kept in the run's summary.
        """
        wandb = self._import_wandb()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        data = [[_cell(row.get(column)) for column in columns] for row in rows]
        run = self._init(
            job_type="study-summary",
            name=f"{self.study_name}-summary",
            config={"study_name": self.study_name, "method": self.method},
        )
        try:
            run.log({"trials": wandb.Table(columns=columns, data=data, allow_mixed_types=True)})
            run.summary["n_trials"] = len(rows)
            if best_value is not None:
                run.summary["best_value"] = best_value
            if best_trial is not None:
                run.summary["best_trial"] = best_trial
        except Exception:
            run.finish(exit_code=1)
            raise
        run.finish(exit_code=0)

    def _import_wandb(self) -> Any:
        if self._wandb is None:
            import wandb

            self._wandb = wandb
        return self._wandb

    def _init(self, *, job_type: str, name: str, config: dict[str, Any]) -> Any:
        wandb = self._import_wandb()
        if self.settings.dir is not None:
            # Where wandb cannot create ``dir`` it quietly writes to the system temp folder instead.
            self.settings.dir.mkdir(parents=True, exist_ok=True)
        with _redacted_argv():
            return wandb.init(
                project=self.settings.project,
                entity=self.settings.entity,
                group=self.study_name,
                job_type=job_type,
                name=name,
                config=config,
                tags=self.tags,
                mode=self.mode,
                dir=str(self.settings.dir) if self.settings.dir is not None else None,
                # A new run per trial that leaves any run of the caller's alone.
                reinit="create_new",
                settings=wandb.Settings(
                    console="off",
                    save_code=False,
                    silent=True,
                    disable_git=True,
                    disable_job_creation=True,
                ),
            )

    def _turn_off(self, error: Exception) -> None:
        self.enabled = False
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"warning: W&B tracking off: {reason}", file=sys.stderr, flush=True)
        run, self._run = self._run, None
        if run is not None:
            # The first error is the one worth reporting.
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)


@contextlib.contextmanager
def _redacted_argv() -> Iterator[None]:
    """Show W&B, which records ``sys.argv`` in every run's metadata, the arguments without passwords."""
    argv = sys.argv
    sys.argv = [redact(arg) for arg in argv]
    try:
        yield
    finally:
        sys.argv = argv


def _lookup(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _cell(value: Any) -> Any:
    return value if value is None or _is_scalar(value) else json.dumps(value, default=str)


# Reading offline runs back.

# The .wandb file is a LevelDB-style log of protobuf ``Record``s (see leveldb's doc/log_format.md):
# a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header.
FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass(frozen=True)
class OfflineRun:
    """What a finished offline run recorded.

    Args:
        path: the run's folder.
        run_id: W&B's id of the run.
        name: the run's display name.
        group: the run's group (the study).
        job_type: the run's job type (the method, or ``study-summary``).
        tags: the run's tags.
        config: the run's config, without W&B's own ``_wandb`` entry.
        history: the logged rows in order, each with W&B's ``_step``, ``_runtime`` and ``_timestamp``.
        summary: the final summary, without W&B's own ``_wandb`` entry.
        exit_code: the exit code the run finished with, or ``None`` if it never finished.
    """

    path: Path
    run_id: str
    name: str
    group: str
    job_type: str
    tags: tuple[str, ...]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    exit_code: int | None

    def table(self, key: str) -> list[dict[str, Any]]:
        """The rows of the last table logged under ``key``, as dicts keyed by column.

        Args:
            key: the key the table was logged under, such as ``"trials"``.
        """
        reference = self.summary.get(key)
        if not isinstance(reference, dict) or "path" not in reference:
            raise KeyError(f"run {self.run_id} has no table {key!r}")
        table = json.loads((self.path / "files" / reference["path"]).read_text())
        return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def find_offline_runs(wandb_dir: Path) -> list[Path]:
    """The offline run folders in a W&B folder, in the order they started (to the second).

    Args:
        wandb_dir: the ``wandb`` folder that W&B wrote, or the folder that holds it.
    """
    folders = [wandb_dir, wandb_dir / "wandb"]
    return sorted(
        (
            run
            for folder in folders
            if folder.is_dir()
            for run in folder.glob("offline-run-*")
            if run.is_dir() and not run.is_symlink() and any(run.glob("*.wandb"))
        ),
        key=lambda run: run.name,
    )


def read_offline_run(run_dir: Path, *, timeout: float = 0.0) -> OfflineRun:
    """Read back an offline run from its ``.wandb`` file, with wandb's own protobuf ``Record``.

    ``run.finish()`` returns before W&B's service has written the whole file, so a run read back in
    the process that tracked it may look unfinished for a moment: ``timeout`` waits for it.

    Args:
        run_dir: a run folder, such as ``wandb/offline-run-20260101_120000-abcd1234``.
        timeout: seconds to wait for the run's exit record before reading what is there.
    """
    files = sorted(run_dir.glob("*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .wandb file in {run_dir}, but found {len(files)}")
    deadline = time.monotonic() + timeout
    while True:
        run = _parse_run(run_dir, files[0])
        if run.exit_code is not None or time.monotonic() >= deadline:
            return run
        time.sleep(0.05)


def _parse_run(run_dir: Path, path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run_id = name = group = job_type = ""
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    exit_code: int | None = None
    for data in _read_records(path):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            run_id, name, group, job_type = run.run_id, run.display_name, run.run_group, run.job_type
            tags = tuple(run.tags)
            _apply(config, run.config.update, run.config.remove)
            _apply(summary, run.summary.update, run.summary.remove)
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _item_path(item), _history_value(item))
            history.append(row)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    return OfflineRun(
        path=run_dir,
        run_id=run_id,
        name=name,
        group=group,
        job_type=job_type,
        tags=tags,
        config=config,
        history=history,
        summary=summary,
        exit_code=exit_code,
    )


def _read_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file; a record cut off at the end (a crash) is dropped."""
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size:
        raise ValueError(f"{path} is not a .wandb file: too short")
    ident, magic, version = FILE_HEADER.unpack_from(data)
    if (ident, magic, version) != (FILE_IDENT, FILE_MAGIC, FILE_VERSION):
        raise ValueError(f"{path} is not a version {FILE_VERSION} .wandb file: header {data[:7]!r}")
    position, pending = FILE_HEADER.size, bytearray()
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block  # the block's zero trailer
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        start = position + CHUNK_HEADER.size
        chunk = data[start : start + length]
        if kind == 0 and length == 0:
            position += left_in_block  # zero padding to the end of the block
            continue
        if len(chunk) < length:
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"{path}: bad checksum at byte {position}")
        position = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = bytearray(chunk)
        elif kind in (MIDDLE, LAST):
            pending += chunk
            if kind == LAST:
                yield bytes(pending)
                pending = bytearray()
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {position}")


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _history_value(item: Any) -> Any:
    kind = item.WhichOneof("value")
    if kind is None:
        return json.loads(item.value_json)
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


def _apply(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        _set(target, _item_path(item), json.loads(item.value_json))
    for item in removes:
        *parents, last = _item_path(item)
        node = _lookup(target, tuple(parents)) if parents else target
        if isinstance(node, dict):
            node.pop(last, None)


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    *parents, last = path
    for key in parents:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[last] = value

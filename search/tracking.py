"""Weights & Biases tracking for a study: one run per trial, grouped by study, plus a summary run.

This is the only module that imports wandb, and it imports it lazily, so a study with tracking
``"disabled"`` never loads it. Tracking is best effort: any W&B error prints one warning and turns
tracking off for the rest of the study, and never stops a trial.

Offline runs are written to ``<dir>/wandb/offline-run-*``: ``wandb sync`` uploads them, and
``wandb leet inspect`` shows what they hold.

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
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, get_args
from urllib.parse import urlsplit

from search.urls import redact
from trainers.errors import ConfigError
from trainers.settings import described, require

WandbMode = Literal["online", "offline", "disabled"]

MODES: tuple[str, ...] = get_args(WandbMode)
DEFAULT_BASE_URL = "https://api.wandb.ai"

# Scalars of an EvalRecord dict: W&B key -> path in the record.
EVAL_KEYS: dict[str, tuple[str, ...]] = {
    "train/loss": ("train_loss",),
    "train/cls": ("train_cls",),
    "train/div": ("train_div",),
    "train/cos": ("train_cos",),
    "train/hidden": ("train_hidden",),
    "train/attn": ("train_attn",),
    "val/loss": ("validation", "loss"),
    "val/accuracy": ("validation", "accuracy"),
    "val/weighted_f1": ("validation", "weighted_f1"),
    "val/macro_f1": ("validation", "macro_f1"),
    "val/roc_auc": ("validation", "roc_auc"),
    "epoch": ("epoch",),
}


@dataclass(frozen=True)
class WandbSettings:
    """Where and how a study is tracked; ``search.run`` gives each a ``--wandb-`` flag."""

    project: str = field(default="toxitune", metadata=described("W&B project"))
    entity: str | None = field(default=None, metadata=described("W&B entity (default: your default entity)"))
    mode: WandbMode | None = field(
        default=None,
        metadata=described("W&B mode (default: online with an API key, else offline for `wandb sync`)"),
    )
    dir: Path | None = field(default=None, metadata=described("where W&B keeps its files (default: ./wandb)"))

    def __post_init__(self) -> None:
        require(bool(self.project), f"wandb project must be a non-empty name, but got {self.project!r}")
        require(
            self.mode is None or self.mode in MODES,
            f"wandb mode must be one of {', '.join(MODES)} or None, but got {self.mode!r}",
        )
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


@dataclass(frozen=True)
class RunLink:
    """Where a trial's W&B run is.

    Attributes:
        path: ``entity/project/id`` (no entity offline).
        url: The run's page; ``None`` for an offline run, which gets one when ``wandb sync`` uploads it.
    """

    path: str
    url: str | None


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
            raise ConfigError(f"study_name must be a non-empty name, but got {study_name!r}")
        if not method:
            raise ConfigError(f"method must be a non-empty name, but got {method!r}")
        self.settings = settings
        self.study_name = study_name
        self.method = method
        self.tags = [method, *(tag for tag in tags if tag != method)]
        self.mode = resolve_mode(settings.mode)
        self.enabled = self.mode != "disabled"
        self._wandb: Any = None
        self._run: Any = None

    @_never_raises
    def start_trial(self, number: int, config: dict[str, Any], params: dict[str, Any]) -> RunLink | None:
        """Start the run of trial ``number``; return where it is, if tracking.

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
        path = "/".join(part for part in (self._run.entity, self._run.project, self._run.id) if part)
        # An offline run has no page until ``wandb sync`` uploads it (and W&B warns when asked for one).
        return RunLink(path, self._run.url if self.mode == "online" else None)

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

"""Opening an Optuna storage from a URL, with errors a user can act on."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import TrialState

from trainers.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///toxitune.db"
# A worker that stops beating for GRACE_SECONDS (killed, machine lost) has its running trial failed.
HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60
_FORMS = "sqlite:///FILE, postgresql://USER@HOST/DB, redis://HOST:PORT or journal:FILE"


def open_storage(url: str) -> BaseStorage:
    """The storage behind ``url``: an SQL database, a Redis journal or a journal file.

    Args:
        url: ``sqlite:///FILE``, ``postgresql://…`` (or any SQLAlchemy URL), ``redis://…``, or
            ``journal:FILE`` / a path ending in ``.log`` for an Optuna journal file.

    Raises:
        ConfigError: The URL has an unknown form or the storage cannot be opened.
    """
    try:
        if url.startswith("journal:") or url.endswith(".log"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("redis://"):
            from optuna.storages.journal import JournalRedisBackend

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                backend = JournalRedisBackend(url)
            backend._redis.ping()  # fail now, with a clear message, rather than mid-study
            return JournalStorage(backend)
        if "://" not in url:
            raise ConfigError(f"storage {url!r} is not a URL; use {_FORMS}")
        if url.startswith("sqlite:///"):
            folder = Path(url.removeprefix("sqlite:///")).expanduser().parent
            if not folder.is_dir():
                raise ConfigError(f"storage {url!r}: folder {folder} does not exist")
        with warnings.catch_warnings():
            # Heartbeats are "experimental" in Optuna's terms but have been stable since 2.9.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
    except ConfigError:
        raise
    except Exception as error:  # SQLAlchemy and redis raise many types for a bad URL or server
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot open storage {url!r} ({reason}); use {_FORMS}") from error


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of dead processes on this host; return their numbers.

    A process killed mid-trial (SIGKILL, power loss) cannot mark its own trial; without this the
    trial would stay RUNNING forever in storages without heartbeats, and a study would never finish.
    Trials of live processes, and of other hosts, are left to them (and to heartbeats).
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_storage_file(url: str) -> Path | None:
    """The local file that opening ``url`` would create: a SQLite database or journal not yet there.

    ``None`` for a server URL or a file that exists. A command that fails before storing a study
    deletes this file, so that it leaves nothing behind.
    """
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:")).expanduser()
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
    else:
        return None
    return None if path.exists() else path

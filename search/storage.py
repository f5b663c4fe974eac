"""Opening an Optuna storage from a URL, with errors a user can act on and passwords kept out of sight."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from search.urls import hide_passwords, redact
from trainers.errors import ConfigError

# A worker that stops beating for GRACE_SECONDS (killed, machine lost) has its running trial failed.
HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60
# Without it a server that accepts connections and never answers hangs a command for good. The URL's own
# ``connect_timeout`` (PostgreSQL) or ``socket_connect_timeout``/``socket_timeout`` (Redis) win over it.
CONNECT_TIMEOUT_SECONDS = 10
# The PostgreSQL advisory lock held while Optuna creates its tables: any 64-bit key no other
# application of the database uses ("toxitune" in ASCII).
SCHEMA_LOCK_KEY = 0x746F786974756E65
_FORMS = "sqlite:///FILE, postgresql://USER@HOST/DB, redis://HOST:PORT or journal:FILE"


def open_storage(url: str, *, create: bool = True) -> BaseStorage:
    """The storage behind ``url``: an SQL database, a Redis journal or a journal file.

    Connecting to PostgreSQL or Redis gives up after :data:`CONNECT_TIMEOUT_SECONDS` unless the URL sets
    its own timeout. Workers that open one new database together do not race to create its tables.
    A password the URL leaves out comes from wherever the driver looks (``PGPASSWORD``, ``~/.pgpass``).

    Args:
        url: ``sqlite:///FILE``, ``postgresql://…`` (or any SQLAlchemy URL), ``redis://…``, or
            ``journal:FILE`` / a path ending in ``.log`` for an Optuna journal file.
        create: whether a missing SQLite or journal file may be created; commands that only read a
            study pass ``False``, so a mistyped path leaves nothing behind.

    Raises:
        ConfigError: The URL has an unknown form, its file is missing and ``create`` is false, or the
            storage cannot be opened. The message never holds the URL's password.
    """
    shown = redact(url)
    try:
        if url.startswith("journal:") or url.endswith(".log"):
            return _journal_file(Path(url.removeprefix("journal:")).expanduser(), create=create)
        if url.startswith("redis://"):
            return _redis_journal(url)
        if "://" not in url:
            raise ConfigError(f"storage {shown!r} is not a URL; use {_FORMS}")
        return _rdb(url, create=create)
    except ConfigError:
        raise
    except Exception as error:  # SQLAlchemy and redis raise many types for a bad URL or server
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"cannot open storage {shown!r} ({hide_passwords(reason, url)}); use {_FORMS}"
        ) from error


def _journal_file(path: Path, *, create: bool) -> JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    if not create:
        _require_file(path, "journal")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _redis_journal(url: str) -> JournalStorage:
    import redis
    from optuna.storages.journal import JournalRedisBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = JournalRedisBackend(url)
    # The backend builds its client from the URL alone; redis-py lets the URL's options win over these.
    backend._redis = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=CONNECT_TIMEOUT_SECONDS
    )
    backend._redis.ping()  # fail now, with a clear message, rather than mid-study
    return JournalStorage(backend)


def _rdb(url: str, *, create: bool) -> RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if url.startswith("sqlite:"):
        path = Path(sqlalchemy.make_url(url).database or "")
        if not path.parent.is_dir():
            raise ConfigError(f"storage {redact(url)!r}: folder {path.parent} does not exist")
        if not create:
            _require_file(path, "database")
        lock = _folder_lock(path.parent)
    elif url.startswith("postgresql"):
        if "connect_timeout" not in sqlalchemy.make_url(url).query:
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        lock = _advisory_lock(url, engine_kwargs)
    with lock, warnings.catch_warnings():
        # Heartbeats are "experimental" in Optuna's terms but have been stable since 2.9.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
        )


def _require_file(path: Path, kind: str) -> None:
    if not path.is_file():
        raise ConfigError(f"no {kind} {path}; run python -m search.run first, or pass the --storage it used")


# RDBStorage creates the tables a database lacks when it opens it. Workers that open one new database
# together race to create them, and the losers crash ("table trials already exists" in SQLite,
# UniqueViolation on pg_type in PostgreSQL), so each holds a lock around opening it.


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    # The folder, not the database file: closing a second handle on the file would drop this process's
    # SQLite locks on it (POSIX locks belong to the process), and a lock file would be left behind.
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


@contextlib.contextmanager
def _advisory_lock(url: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **engine_kwargs)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            yield  # the lock lasts as long as this connection, which closing the block ends
    finally:
        engine.dispose()


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of dead processes on this host; return their numbers.

    A process killed mid-trial (SIGKILL, power loss) cannot mark its own trial; without this the
    trial would stay RUNNING forever in storages without heartbeats, and a study would never finish.
    Trials of live processes, and of other hosts, are left to them (and to heartbeats).
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, pid = _worker(trial)
        if worker_host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            # Another worker sweeping at the same moment may have failed it first.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
    return failed


def fail_abandoned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials no worker will finish; return their numbers.

    Those of dead processes on this host (:func:`fail_orphaned_trials`) and, in SQL storages, those
    whose worker, wherever it ran, has not beaten for :data:`GRACE_SECONDS`. Journal storages (Redis,
    journal files) keep no heartbeats, so there a trial orphaned on another host stays RUNNING.
    """
    failed = fail_orphaned_trials(study)
    if not is_heartbeat_enabled(study._storage):
        return failed
    running = {trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    # Optuna does not say which trials it failed; one its own worker failed meanwhile is counted too.
    failed += [
        trial.number
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if trial.number in running
    ]
    return failed


def watched(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether :func:`fail_abandoned_trials` would fail ``trial`` if its worker died.

    True in SQL storages, which keep heartbeats, and for trials of processes on this host.
    """
    return is_heartbeat_enabled(study._storage) or _worker(trial)[0] == socket.gethostname()


def _worker(trial: optuna.trial.FrozenTrial) -> tuple[str, str]:
    worker_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
    return worker_host, pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.storage
from search.storage import fail_orphaned_trials, open_storage
from search.study import stored_attr
from search.urls import redact
from trainers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.mark.parametrize("form", ["sqlite", "journal", "redis"])
def test_each_storage_form_holds_a_study(tmp_path, form):
    if form == "redis" and not _redis_up():
        pytest.skip("Redis not reachable on 127.0.0.1:6379")
    url = {
        "sqlite": f"sqlite:///{tmp_path}/s.db",
        "journal": f"journal:{tmp_path}/s.log",
        "redis": "redis://127.0.0.1:6379",
    }[form]
    name = f"storage-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = optuna.load_study(study_name=name, storage=open_storage(url))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    optuna.delete_study(study_name=name, storage=open_storage(url))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("toxitune.db", "is not a URL"),
        ("sqlite:////no/such/folder/x.db", "does not exist"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot open storage"),
        ("redis://127.0.0.1:1", "cannot open storage"),
    ],
)
def test_bad_storage_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        open_storage(url)


# Optuna warns that heartbeats are meant for Study.optimize; ask() is how this test plants RUNNING trials.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_only_trials_of_dead_local_processes_are_failed(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db"))
    host = socket.gethostname()
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default, so never a live process
    workers = [f"{host}:{dead_pid}", f"{host}:{os.getpid()}", f"elsewhere:{dead_pid}"]
    for worker in workers:
        trial = study.ask()
        trial.set_user_attr("worker", worker)
    assert fail_orphaned_trials(study) == [0]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_stored_attr_reads_one_study_by_name_and_answers_none_for_what_is_missing(tmp_path, form):
    url = f"sqlite:///{tmp_path}/s.db" if form == "sqlite" else f"journal:{tmp_path}/s.log"
    for name, signal in (("a", "roc_auc"), ("b", "macro_f1")):
        optuna.create_study(study_name=name, storage=open_storage(url)).set_user_attr("pruner_signal", signal)
    storage = open_storage(url)
    assert stored_attr(storage, "b", "pruner_signal") == "macro_f1"
    assert stored_attr(storage, "a", "pruner_signal") == "roc_auc"
    assert stored_attr(storage, "a", "metric") is None
    assert stored_attr(storage, "missing", "pruner_signal") is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://user:s%40cr:t@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
        ("postgresql://user@host/db?password=secret&sslmode=require", "postgresql://user@host/db?password=***&sslmode=require"),
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("--storage=redis://default:secret@host:6379", "--storage=redis://default:***@host:6379"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///folder/with:colon@sign.db", "sqlite:///folder/with:colon@sign.db"),
        ("journal:runs/study.log", "journal:runs/study.log"),
    ],
)  # fmt: skip
def test_redact_hides_every_password_and_nothing_else(url, shown):
    assert redact(url) == shown


SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class FakePostgres:
    """A PostgreSQL server on a local port that asks for a cleartext password, records it and refuses it.

    With ``echo`` its refusal quotes the password, as a careless proxy might, so the driver's error holds it.
    """

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self.passwords: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError, EOFError):
                connection.settimeout(10)
                self._refuse_login(connection)

    def _refuse_login(self, connection: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", _receive(connection, 8))
            if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
                connection.sendall(b"N")  # no encryption: go on in plain text
                continue
            _receive(connection, length - 8)  # the startup message's parameters
            break
        connection.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind, (length,) = _receive(connection, 1), struct.unpack("!i", _receive(connection, 4))
        body = _receive(connection, length - 4)
        if kind != b"p":
            return
        password = body.rstrip(b"\0").decode()
        self.passwords.append(password)
        message = f"password {password} refused" if self.echo else "password authentication failed"
        fields = b"SFATAL\0C28P01\0M" + message.encode() + b"\0\0"
        connection.sendall(b"E" + struct.pack("!i", 4 + len(fields)) + fields)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the client hung up")
        data += chunk
    return data


@pytest.fixture
def fake_postgres():
    servers = []

    def start(**kwargs) -> FakePostgres:
        servers.append(FakePostgres(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _open_error(url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_a_password_in_the_url_reaches_the_server_and_no_message(fake_postgres):
    server = fake_postgres(echo=True)
    message = _open_error(f"postgresql://user:url-s3cret@127.0.0.1:{server.port}/db")
    assert server.passwords and set(server.passwords) == {"url-s3cret"}
    assert "url-s3cret" not in message and "password *** refused" in message, message


def test_a_password_from_pgpassword_reaches_the_server(fake_postgres, monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSWORD", "env-s3cret")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    server = fake_postgres()
    message = _open_error(f"postgresql://user@127.0.0.1:{server.port}/db")
    assert server.passwords and set(server.passwords) == {"env-s3cret"}
    assert "env-s3cret" not in message


def test_a_password_from_a_pgpass_file_reaches_the_server(fake_postgres, monkeypatch, tmp_path):
    server = fake_postgres()
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{server.port}:db:user:file-s3cret\n")
    passfile.chmod(0o600)  # libpq ignores a password file others can read
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    message = _open_error(f"postgresql://user@127.0.0.1:{server.port}/db")
    assert server.passwords and set(server.passwords) == {"file-s3cret"}
    assert "file-s3cret" not in message


@pytest.mark.parametrize(
    ("url", "default"),
    [
        ("postgresql://user:s3cret@127.0.0.1:{port}/db", 1),
        ("postgresql://user:s3cret@127.0.0.1:{port}/db?connect_timeout=1", 10_000),
        ("redis://:s3cret@127.0.0.1:{port}", 1),
        ("redis://:s3cret@127.0.0.1:{port}?socket_connect_timeout=1&socket_timeout=1", 10_000),
    ],
)
def test_a_server_that_never_answers_is_a_one_line_error_after_the_timeout(monkeypatch, url, default):
    """The default timeout applies unless the URL sets its own, which wins."""
    monkeypatch.setattr(search.storage, "CONNECT_TIMEOUT_SECONDS", default)
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nobody answers
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            open_storage(url.format(port=silent.getsockname()[1]))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=connect, daemon=True)
    try:
        thread.start()
        thread.join(timeout=60)  # only so that a hang fails the test instead of stalling it
        assert not thread.is_alive(), "open_storage still waits for the server"
    finally:
        silent.close()
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError), outcome
    message = str(outcome[0])
    assert len(message.splitlines()) == 1 and "s3cret" not in message and "cannot open storage" in message


# Each worker waits for a file the test writes once all have imported, so all open the storage at once.
WORKER = """
import sys, time, pathlib, optuna
from search.storage import open_storage
url, folder, number = sys.argv[1:]
folder = pathlib.Path(folder)
(folder / f"ready-{number}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
study = optuna.create_study(study_name="together", storage=open_storage(url), load_if_exists=True)
study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
"""


@pytest.mark.parametrize("form", ["postgresql", "sqlite"])
def test_workers_opening_a_new_database_together_all_run(request, tmp_path, form):
    url = request.getfixturevalue("postgres_db") if form == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, str(tmp_path), str(number)], env=env, cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
        for number in range(3)
    ]  # fmt: skip
    try:
        while len(list(tmp_path.glob("ready-*"))) < len(workers) and all(w.poll() is None for w in workers):
            time.sleep(0.01)
        (tmp_path / "go").touch()
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0, 0], errors
    study = optuna.load_study(study_name="together", storage=open_storage(url))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_a_read_only_open_of_a_missing_file_is_an_error_that_creates_nothing(tmp_path, form):
    url = f"sqlite:///{tmp_path}/s.db" if form == "sqlite" else f"journal:{tmp_path}/s.log"
    with pytest.raises(ConfigError, match=r"^no (database|journal) .*run python -m search.run first"):
        open_storage(url, create=False)
    assert list(tmp_path.iterdir()) == []

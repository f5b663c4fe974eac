from __future__ import annotations

import os
import socket
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from search.storage import fail_orphaned_trials, open_storage
from search.study import stored_attr
from trainers.errors import ConfigError


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

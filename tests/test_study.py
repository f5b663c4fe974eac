"""run_until with trials that other workers, live, dead or lost, hold RUNNING."""

from __future__ import annotations

import datetime
import socket
import subprocess
import threading

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

import search.study
from search.config import StudyConfig
from search.storage import open_storage
from search.study import finished_count, run_until, shortfall

# Optuna warns that heartbeats are meant for Study.optimize; ask() is how these tests plant RUNNING trials.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _study(url: str) -> tuple[optuna.Study, StudyConfig]:
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    return study, StudyConfig(name="s", storage=url, trials=1)


def _plant(study: optuna.Study, worker: str) -> optuna.Trial:
    """A RUNNING trial of ``worker``, as another worker's process leaves it."""
    trial = study.ask()
    trial.set_user_attr("worker", worker)
    return trial


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


@pytest.fixture
def peer():
    """A live process on this host, standing in for another worker."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_trial_another_host_abandoned_is_failed_and_run_again(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = _plant(study, "otherhost:123")
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as connection:  # its worker last beat long ago
        connection.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :then"),
            {"then": datetime.datetime(2000, 1, 1)},
        )
    failed = run_until(study, _objective, StudyConfig(name="s", storage=url, trials=1))
    assert finished_count(study) == 1
    assert failed == [trial.number]
    assert study.trials[trial.number].state == TrialState.FAIL


def test_a_worker_waits_for_a_peers_trial_and_replaces_it_when_the_peer_dies(
    tmp_path, monkeypatch, capsys, peer
):
    monkeypatch.setattr(search.study, "POLL_SECONDS", 0.05)
    study, settings = _study(f"sqlite:///{tmp_path}/s.db")
    planted = _plant(study, f"{socket.gethostname()}:{peer.pid}")
    calls = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        if len(calls) == 2:  # the peer is killed while this worker runs its second trial
            peer.kill()
            peer.wait()
        return _objective(trial)

    # The timeout only keeps a broken version from waiting for good.
    settings = StudyConfig(name="s", storage=settings.storage, trials=3, timeout=120)
    failed = run_until(study, objective, settings)
    assert finished_count(study) == 3
    assert failed == [planted.number]
    assert "waiting for 1 trial running in other workers" in capsys.readouterr().out


def test_a_worker_that_times_out_waiting_says_what_is_missing(tmp_path, monkeypatch, peer):
    monkeypatch.setattr(search.study, "POLL_SECONDS", 0.05)
    study, _ = _study(f"sqlite:///{tmp_path}/s.db")
    _plant(study, f"{socket.gethostname()}:{peer.pid}")
    settings = StudyConfig(name="s", storage=f"sqlite:///{tmp_path}/s.db", trials=2, timeout=0.5)
    run_until(study, _objective, settings)
    assert finished_count(study) == 1
    assert shortfall(study, settings) == (
        "1 of 2 trials missing (1 still running in other workers); run the same command again to finish the study"
    )


def test_a_finished_study_has_no_shortfall(tmp_path):
    study, settings = _study(f"sqlite:///{tmp_path}/s.db")
    run_until(study, _objective, settings)
    assert shortfall(study, settings) is None


def test_a_worker_does_not_wait_on_another_hosts_trial_it_cannot_watch(tmp_path):
    """A journal keeps no heartbeats: had that host died, the wait would never end."""
    study, settings = _study(f"journal:{tmp_path}/s.log")
    _plant(study, "otherhost:123")
    thread = threading.Thread(target=run_until, args=(study, _objective, settings), daemon=True)
    thread.start()
    thread.join(timeout=60)  # only so that a hang fails the test instead of stalling it
    assert not thread.is_alive()
    assert finished_count(study) == 0
    assert "1 still running in other workers" in shortfall(study, settings)

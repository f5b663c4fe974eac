"""Creating, resuming and running a study until it holds its target number of finished trials."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.config import TPE_STARTUP_TRIALS, SamplerName, StudyConfig
from search.pruners import make_pruner, reports_within
from search.storage import fail_abandoned_trials, watched
from studies.spaces import readable_params
from trainers.cli import raise_if_interrupted
from trainers.config import maximizes
from trainers.errors import ToxituneError
from trainers.settings import difference

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 3
# Seconds between looks at the trials other workers run, while this one waits for them to end.
POLL_SECONDS = 5.0


def make_sampler(
    name: SamplerName, seed: int, startup_trials: int = TPE_STARTUP_TRIALS
) -> optuna.samplers.BaseSampler:
    """A sampler seeded with ``seed`` plus the number of the first trial it samples.

    A lone worker that resumes a study so draws afresh instead of replaying its first trials, and
    workers that open a study together, which get distinct trial numbers, never share a seed.
    TPE draws the study's first ``startup_trials`` trials at random (the other samplers ignore it).
    """
    return FirstTrialSeeded(lambda first_trial: _seeded_sampler(name, seed + first_trial, startup_trials))


def _seeded_sampler(
    name: SamplerName, seed: int, startup_trials: int = TPE_STARTUP_TRIALS
) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    with warnings.catch_warnings():
        # Experimental in Optuna, but they let TPE model parameters jointly (lr with batch size, loss weights).
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials
        )


class FirstTrialSeeded(optuna.samplers.BaseSampler):
    """Builds its sampler when the first trial starts, from that trial's number, then defers to it."""

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler]) -> None:
        self._build = build
        self._sampler: optuna.samplers.BaseSampler | None = None

    @property
    def _inner(self) -> optuna.samplers.BaseSampler:
        if self._sampler is None:
            raise RuntimeError("FirstTrialSeeded sampled before any trial started")
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._sampler is None:
            self._sampler = self._build(trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._sampler is not None:
            self._sampler.reseed_rng()


def open_study(
    config: StudyConfig,
    *,
    storage: BaseStorage,
    directions: Sequence[Literal["maximize", "minimize"]],
    evaluations: int,
    evals_per_epoch: int,
    attrs: dict[str, object],
) -> optuna.Study:
    """Create the study ``config.name`` in ``storage`` (opened from ``config.storage``) or load it to resume.

    ``attrs`` must match what the study was created with; ``config`` itself is recorded once, as the
    study was created, in the user attribute ``study_config``.

    Raises:
        ToxituneError: The study exists with other ``attrs`` or another number of objectives.
    """
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=list(directions),
        sampler=make_sampler(config.sampler, config.seed, config.sampler_startup_trials),
        pruner=make_pruner(
            config.pruner,
            evaluations=evaluations,
            warmup=reports_within(config.pruner_warmup_epochs, evals_per_epoch),
            patience=reports_within(config.pruner_patience_epochs, evals_per_epoch),
            startup_trials=config.pruner_startup_trials,
        ),
        load_if_exists=True,
    )
    # Optuna loads an existing study with its own directions, whatever was asked for.
    if len(study.directions) != len(directions):
        raise ToxituneError(
            f"study {study.study_name!r} has {len(study.directions)} objective(s), not {len(directions)}; "
            "rerun it with its own --objectives or pass another --study"
        )
    for key, value in attrs.items():
        pin_attr(study, key, value)
    if "study_config" not in study.user_attrs:
        study.set_user_attr("study_config", config.recorded())
    return study


def study_exists(storage: BaseStorage, study_name: str) -> bool:
    """Whether ``storage`` holds a study called ``study_name``."""
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


def stored_attr(storage: BaseStorage, study_name: str, key: str) -> Any:
    """User attribute ``key`` of the stored study ``study_name``; ``None`` if either is missing."""
    # Looked up by name: summarising every study would read all of a shared database's studies.
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get(key)


def pin_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Record ``value`` as the study's ``key``, or check it equals what the study was created with.

    Trials of one study must share their fixed settings and data, or the sampler, the pruner and
    the export would compare trials that trained on different things.

    Raises:
        ToxituneError: The study holds another value for ``key``.
    """
    value = json.loads(json.dumps(value))
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, value)
    elif stored != value:
        raise ToxituneError(
            f"study {study.study_name!r} was created with other {key} ({difference(stored, value)}); "
            "rerun it with the same settings or pass another --study"
        )


def finished_count(study: optuna.Study) -> int:
    """COMPLETE and PRUNED trials: what ``--trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def shortfall(study: optuna.Study, config: StudyConfig) -> str | None:
    """How many finished trials the study lacks and why, in one line; ``None`` when it has them all.

    After :func:`run_until` that is its timeout, or trials other workers still run that it could not
    wait on.
    """
    missing = config.trials - finished_count(study)
    if missing <= 0:
        return None
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    why = f"{running} still running in other workers" if running else "the timeout passed"
    return (
        f"{missing} of {config.trials} trials missing ({why}); run the same command again to finish the study"
    )


def run_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    config: StudyConfig,
) -> list[int]:
    """Run trials until the study holds ``config.trials`` finished ones, or ``config.timeout`` passes.

    Trials no worker will finish (see :func:`~search.storage.fail_abandoned_trials`) are marked FAIL
    first; finished trials are never rerun. Trials other workers are running count too, so workers
    sharing the study do not overshoot its target. Once only those are missing, this worker waits for
    them, sweeping abandoned trials every :data:`POLL_SECONDS`, and runs another trial for each that
    ends unfinished. It does not wait on trials it cannot tell the end of (another host's, in a journal
    storage): it returns, short of the target, as it does when the timeout passes.

    Returns:
        The numbers of the abandoned trials that were failed.

    Raises:
        ToxituneError: Several trials in a row failed with an error (a bug, not a bad config).
    """
    orphans = fail_abandoned_trials(study)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    failures = 0
    last: list[FrozenTrial] = []
    waiting = False
    while (finished := finished_count(study)) < config.trials:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if finished + len(running) >= config.trials:
            if not any(watched(study, trial) for trial in running):
                break
            if not waiting:
                trials = "trial" if len(running) == 1 else "trials"
                print(f"waiting for {len(running)} {trials} running in other workers…", flush=True)
                waiting = True
            time.sleep(POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining))
            orphans += fail_abandoned_trials(study)
            continue
        waiting = False
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),
            callbacks=[lambda _study, trial: last.append(trial)],
            gc_after_trial=True,
        )
        raise_if_interrupted()
        failures = failures + 1 if last and last[-1].state == TrialState.FAIL else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            reason = last[-1].system_attrs.get("fail_reason", "see the log above")
            raise ToxituneError(f"{failures} trials in a row failed ({reason}); fix that and rerun to resume")
    return orphans


def trial_state(trial: FrozenTrial) -> str:
    """``complete``, ``pruned``, ``collapsed``, ``diverged``, ``failed`` or ``running``."""
    if trial.state == TrialState.PRUNED:
        return (
            trial.user_attrs.get("status", "pruned")
            if trial.user_attrs.get("status") in ("collapsed", "diverged")
            else "pruned"
        )
    return {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(
        trial.state, trial.state.name.lower()
    )


def state_counts(study: optuna.Study) -> Counter[str]:
    """How many trials ended in each :func:`trial_state`."""
    return Counter(trial_state(trial) for trial in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or ``None`` while there is none or the study has several objectives."""
    if len(study.directions) > 1 or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials no other COMPLETE trial dominates (Optuna's ``best_trials``), in trial order."""
    return sorted(study.best_trials, key=lambda trial: trial.number)


def metric_value(trial: FrozenTrial, metric: str) -> float | None:
    """The trial's best validation ``metric``: its value if it completed, else read from its evaluations.

    A pruned trial's Optuna value is its last report, the pruner's signal (ROC AUC for an F1 study, by
    default), not its metric. Trials from before evaluations were kept reported their metric. A trial of
    a multi-objective study holds several values; its metric is the ``value`` user attribute.
    """
    if trial.values is not None and len(trial.values) > 1:
        return trial.user_attrs.get("value")
    if trial.state == TrialState.COMPLETE or not trial.user_attrs.get("evaluations"):
        return trial.value
    return (max if maximizes(metric) else min)(e[metric] for e in trial.user_attrs["evaluations"])


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat row per trial, parameters prefixed ``param:``; ``value`` is the study's metric.

    A multi-objective study's rows add each objective's value (``objective:NAME``) and whether the
    trial is on the Pareto front (``pareto``).
    """
    metric = study.user_attrs.get("metric", "macro_f1")
    objectives = study.user_attrs.get("objectives") or [metric]
    front = {trial.number for trial in pareto_trials(study)} if len(study.directions) > 1 else None
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {
            "trial": trial.number,
            "state": trial_state(trial),
            "value": metric_value(trial, metric),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "steps": trial.user_attrs.get("steps"),
            "seconds": trial.user_attrs.get("seconds"),
            "reason": trial.user_attrs.get("reason"),
        }
        if front is not None:
            values = trial.values or [None] * len(objectives)
            row |= {f"objective:{name}": v for name, v in zip(objectives, values, strict=True)}
            row["pareto"] = trial.number in front
        params = readable_params(trial.params, trial.user_attrs)
        rows.append(row | {f"param:{name}": value for name, value in params.items()})
    return rows

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.pruners import MEDIAN_STARTUP_TRIALS, SpareImprovingPruner, describe, make_pruner
from trainers.errors import ConfigError


def _first_cut(study: optuna.Study, curve: list[float]) -> int | None:
    """Report ``curve`` as one trial; the report at which the study's pruner cut it, or None."""
    trial = study.ask()
    for step, value in enumerate(curve, 1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step
    study.tell(trial, curve[-1])
    return None


def _study(pruner: optuna.pruners.BasePruner, direction: str = "maximize") -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=pruner)
    steady = [0.5, 0.6, 0.7, 0.8] if direction == "maximize" else [0.5, 0.4, 0.3, 0.2]
    for _ in range(MEDIAN_STARTUP_TRIALS):
        assert _first_cut(study, steady) is None
    return study


# Best-so-far curves, as trials report them: one that starts last and rises each report, one that is stuck.
SLOW_STARTER = [0.1, 0.2, 0.4, 0.95]
STUCK = [0.1, 0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    ("patience", "slow_starter_cut", "stuck_cut"),
    [(0, 1, 1), (1, None, 2), (2, None, 3)],
)
def test_a_rising_trial_is_spared_and_a_flat_one_cut_after_patience_reports(
    patience, slow_starter_cut, stuck_cut
):
    study = _study(make_pruner("median", evaluations=4, patience=patience))
    assert _first_cut(study, SLOW_STARTER) == slow_starter_cut
    assert _first_cut(study, STUCK) == stuck_cut


@pytest.mark.parametrize("startup_trials", [2, 3, MEDIAN_STARTUP_TRIALS])
def test_the_median_pruner_judges_only_after_its_startup_trials_finish(startup_trials):
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner("median", evaluations=4, startup_trials=startup_trials)
    )
    for _ in range(startup_trials - 1):
        assert _first_cut(study, [0.5, 0.6, 0.7, 0.8]) is None
    assert _first_cut(study, STUCK) is None, "one start-up trial has yet to finish"
    assert _first_cut(study, STUCK) == 1


def test_the_best_must_rise_not_merely_hold_and_a_minimising_study_counts_falls():
    study = _study(make_pruner("median", evaluations=4, patience=1), direction="minimize")
    assert _first_cut(study, [0.9, 0.8, 0.75, 0.1]) is None
    assert _first_cut(study, [0.9, 0.9, 0.9, 0.9]) == 2


def test_a_spared_trial_is_still_cut_only_on_the_wrapped_pruners_word():
    # Flat but above the median: the median pruner keeps it, so sparing never adds a cut.
    study = _study(make_pruner("median", evaluations=4, patience=1))
    assert _first_cut(study, [0.9, 0.9, 0.9, 0.9]) is None


class _CountingPruner(optuna.pruners.BasePruner):
    def __init__(self) -> None:
        self.calls = 0

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        self.calls += 1
        return True


def test_the_wrapped_pruner_is_asked_at_every_report_even_when_the_trial_is_spared():
    # Hyperband records the rungs a trial reached when it is asked; skipping it would lose them.
    counting = _CountingPruner()
    study = optuna.create_study(direction="maximize", pruner=SpareImprovingPruner(counting, patience=1))
    assert _first_cut(study, SLOW_STARTER) is None
    assert counting.calls == len(SLOW_STARTER)


def test_negative_patience_is_refused():
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        SpareImprovingPruner(optuna.pruners.NopPruner(), patience=-1)


def test_a_pruned_trials_reason_names_the_wrapped_pruner_and_the_guard():
    assert describe(make_pruner("median", evaluations=4)) == "MedianPruner"
    guarded = make_pruner("hyperband", evaluations=4, patience=2)
    assert describe(guarded) == "HyperbandPruner (after 2 reports without a new best)"

from __future__ import annotations

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from reports.replay import (
    PrunerSetting,
    replay_pruner,
    replay_report_rates,
    replay_signals,
    signal_curves,
    thin_reports,
)
from search.pruners import MEDIAN_STARTUP_TRIALS
from trainers.errors import ConfigError

# Two steady trials, then a late bloomer that ends best: the median pruner judges it by its first reports.
CURVES = ([0.5, 0.7, 0.8], [0.6, 0.7, 0.9], [0.1, 0.2, 0.95])


def _study_without_pruner(extra_states: tuple[TrialState, ...] = ()) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    for curve in CURVES:
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
        trial.set_user_attr("steps", 30)
        study.tell(trial, curve[-1])
    for state in extra_states:
        trial = study.ask()
        trial.report(0.9, 1)  # would beat the median, but the trial ended cut short (e.g. collapsed)
        trial.set_user_attr("steps", 10)
        study.tell(trial, state=state)
    return study


def _replay(study: optuna.Study, **median):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, **median)
    return replay_pruner(study.trials, pruner, study.direction)


def test_median_pruner_cuts_the_late_bloomer_at_its_first_report():
    replay = _replay(_study_without_pruner(), n_warmup_steps=0)
    assert replay.pruned == 1
    assert replay.steps == 30 + 30 + 10 and replay.full_steps == 90
    assert replay.steps_saved == pytest.approx(20 / 90)
    assert (replay.best_value, replay.full_best_value) == (0.9, 0.95)


def test_a_warm_up_spares_the_first_reports_and_charges_for_them():
    replay = _replay(_study_without_pruner(), n_warmup_steps=2)  # step 1 not judged; step 2 is
    assert replay.pruned == 1 and replay.steps == 30 + 30 + 20


def test_without_a_pruner_the_replay_is_the_study():
    study = _study_without_pruner()
    replay = replay_pruner(study.trials, optuna.pruners.NopPruner(), StudyDirection.MAXIMIZE)
    assert (replay.pruned, replay.steps, replay.steps_saved) == (0, 90, 0.0)
    assert replay.best_value == replay.full_best_value == 0.95


def test_trials_cut_short_stay_cut_and_unfinished_ones_are_skipped():
    study = _study_without_pruner(extra_states=(TrialState.PRUNED, TrialState.FAIL))
    study.ask()  # still running: no steps to charge yet
    replay = _replay(study, n_warmup_steps=0)
    assert replay.full_steps == 90 + 10 + 10 and replay.steps == 70 + 10 + 10
    assert replay.pruned == 1  # only the late bloomer: the others end as they did
    assert replay.full_best_value == 0.95 and replay.best_value == 0.9


def test_minimising_studies_keep_the_lowest_value():
    study = optuna.create_study(direction="minimize")
    for value in (0.3, 0.2):
        trial = study.ask()
        trial.report(value, 1)
        trial.set_user_attr("steps", 5)
        study.tell(trial, value)
    replay = replay_pruner(study.trials, optuna.pruners.NopPruner(), study.direction)
    assert replay.best_value == replay.full_best_value == 0.2


def test_thinned_reports_keep_every_nth_and_the_last():
    study = optuna.create_study(direction="maximize")
    for curve in ([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7]):  # the second ended early, at an odd report
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    thinned = thin_reports(study.trials, 2)
    assert [t.intermediate_values for t in thinned] == [{1: 0.2, 2: 0.4}, {1: 0.6, 2: 0.7}]
    assert study.trials[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}, "originals untouched"
    assert [t.value for t in thinned] == [0.4, 0.7]
    with pytest.raises(ConfigError, match="every must be positive"):
        thin_reports(study.trials, 0)


def test_fewer_reports_give_the_pruner_a_later_first_chance():
    # Five steady trials (the median pruner's start-up), then a late bloomer. With three reports an
    # epoch the median cuts it at its first; thinned to one, its only report is its best, and it stays.
    study = optuna.create_study(direction="maximize")
    for curve in [[0.5, 0.6, 0.7]] * MEDIAN_STARTUP_TRIALS + [[0.1, 0.2, 0.95]]:
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
        trial.set_user_attr("steps", 30)
        study.tell(trial, curve[-1])
    replays = replay_report_rates(study.trials, study.direction, epochs=1, evals_per_epoch=3)
    assert list(replays) == [3, 1]
    every_report, once = replays[3][PrunerSetting("median")], replays[1][PrunerSetting("median")]
    assert (every_report.pruned, every_report.steps, every_report.best_value) == (1, 160, 0.7)
    assert (once.pruned, once.steps, once.best_value) == (0, 180, 0.95)


def test_signal_curves_replay_the_best_of_another_metric_in_the_studys_direction():
    study = optuna.create_study(direction="maximize")
    evaluations = [
        {"epoch": 0.5, "macro_f1": 0.40, "roc_auc": 0.70, "loss": 0.60},
        {"epoch": 1.0, "macro_f1": 0.40, "roc_auc": 0.65, "loss": 0.50},
        {"epoch": 1.5, "macro_f1": 0.70, "roc_auc": 0.80, "loss": 0.55},
    ]
    study.add_trial(
        optuna.trial.create_trial(
            value=0.7,
            intermediate_values={1: 0.4, 2: 0.4, 3: 0.7},
            user_attrs={"evaluations": evaluations},
        )
    )
    study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.5}))  # no evaluations kept
    [auc] = signal_curves(study.trials, "roc_auc", study.direction)
    assert auc.intermediate_values == {1: 0.70, 2: 0.70, 3: 0.80} and auc.value == 0.7
    [loss] = signal_curves(study.trials, "loss", study.direction)
    assert loss.intermediate_values == {1: -0.60, 2: -0.50, 3: -0.50}
    assert study.trials[0].intermediate_values == {1: 0.4, 2: 0.4, 3: 0.7}, "originals untouched"


def test_replay_signals_adds_the_other_signals_only_when_every_trial_kept_its_evaluations():
    study = optuna.create_study(direction="maximize")
    for k in range(MEDIAN_STARTUP_TRIALS + 1):
        evaluations = [{"macro_f1": 0.4 + 0.1 * k, "roc_auc": 0.7, "loss": 0.5}]
        study.add_trial(
            optuna.trial.create_trial(
                value=0.4 + 0.1 * k,
                intermediate_values={1: 0.4 + 0.1 * k},
                user_attrs={"evaluations": evaluations},
            )
        )
    rates = {"reported": "macro_f1", "metric": "macro_f1", "epochs": 1, "evals_per_epoch": 1}
    assert list(replay_signals(study.trials, study.direction, **rates)) == ["macro_f1", "roc_auc", "loss"]
    # A study whose pruner judged ROC AUC reported it; its metric is then replayed from the evaluations.
    by_auc = replay_signals(study.trials, study.direction, **{**rates, "reported": "roc_auc"})
    assert list(by_auc) == ["roc_auc", "macro_f1", "loss"]
    assert by_auc["macro_f1"] == replay_signals(study.trials, study.direction, **rates)["macro_f1"]
    study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.5}))
    assert list(replay_signals(study.trials, study.direction, **rates)) == ["macro_f1"]

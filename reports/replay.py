"""Replay a finished study through a pruner: which trials it would have cut, and what that saves.

A study run without a pruner holds every trial's full learning curve (its intermediate values). Feeding
those curves, in trial order, to a pruner over a fresh in-memory study shows what the pruner would have
cut with the *same* configurations: the steps saved and whether the best trial would have survived.
A real pruned study also changes what the sampler draws next, so two studies with and without a
pruner differ by sampling luck as well; a replay holds the draws fixed and measures pruning alone.

Steps are charged pro rata: a trial cut at its k-th of n reports is charged k/n of its steps, which is
exact when its evaluations are evenly spaced (``evals_per_epoch`` does that).

:func:`thin_reports` drops reports from the curves, so one study run with, say, four evaluations an
epoch also shows what a pruner would have made of two or one: more reports give the pruner earlier
chances to cut, and cost an evaluation each.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import optuna
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.pruners import MEDIAN_STARTUP_TRIALS, PrunerName, make_pruner, reports_within
from trainers.config import maximizes
from trainers.errors import ConfigError


@dataclass(frozen=True)
class PrunerSetting:
    """A pruner as ``search.run`` builds it from ``--pruner``, ``--pruner-warmup-epochs``,
    ``--pruner-patience-epochs`` and ``--pruner-startup-trials``."""

    name: PrunerName
    warmup_epochs: float = 0.0
    patience_epochs: float = 0.0
    startup_trials: int = MEDIAN_STARTUP_TRIALS

    def build(self, *, epochs: int, evals_per_epoch: int) -> optuna.pruners.BasePruner:
        """The pruner for trials of ``epochs`` epochs with ``evals_per_epoch`` reports each."""
        return make_pruner(
            self.name,
            evaluations=epochs * evals_per_epoch,
            warmup=reports_within(self.warmup_epochs, evals_per_epoch),
            patience=reports_within(self.patience_epochs, evals_per_epoch),
            startup_trials=self.startup_trials,
        )

    @property
    def startup(self) -> int | None:
        """Trials that finish before the pruner judges any; None for Hyperband, which ignores the setting."""
        return self.startup_trials if self.name == "median" else None

    @property
    def label(self) -> str:
        """E.g. ``median, warm-up 0.5 epochs, patience 0.25 epochs``."""
        parts = [self.name, f"warm-up {self.warmup_epochs:g} epochs"]
        if self.patience_epochs:
            parts.append(f"patience {self.patience_epochs:g} epochs")
        if self.startup not in (None, MEDIAN_STARTUP_TRIALS):
            parts.append(f"{self.startup} start-up trials")
        return ", ".join(parts)


# toxitune's pruners at settings worth comparing: warm-ups of none, half an epoch and one; sparing trials
# whose best rose within the last quarter or half epoch; fewer full trials before the median judges.
PRUNER_SETTINGS: tuple[PrunerSetting, ...] = (
    PrunerSetting("median"),
    PrunerSetting("median", startup_trials=3),
    PrunerSetting("median", warmup_epochs=0.5),
    PrunerSetting("median", warmup_epochs=1.0),
    PrunerSetting("median", patience_epochs=0.25),
    PrunerSetting("median", patience_epochs=0.5),
    PrunerSetting("hyperband"),
    PrunerSetting("hyperband", warmup_epochs=0.5),
    PrunerSetting("hyperband", patience_epochs=0.25),
)


@dataclass(frozen=True)
class Replay:
    """What a pruner would have made of a study's trials.

    Attributes:
        steps: Training steps the trials would have taken under the pruner.
        full_steps: Training steps they took in the study replayed.
        pruned: Trials the pruner would have cut.
        best_value: Best value among the trials the pruner lets finish (None if none finishes).
        full_best_value: Best value in the study replayed.
    """

    steps: float
    full_steps: int
    pruned: int
    best_value: float | None
    full_best_value: float | None

    @property
    def steps_saved(self) -> float:
        """Share of the study's training steps the pruner would have saved."""
        return 1 - self.steps / self.full_steps if self.full_steps else 0.0


def replay_pruner(
    trials: Sequence[FrozenTrial], pruner: optuna.pruners.BasePruner, direction: StudyDirection
) -> Replay:
    """Feed ``trials``' intermediate values, in trial order, to ``pruner``; see the module docstring.

    Trials that did not finish (running, waiting) are skipped. A trial that ended pruned or failed in
    the replayed study ends that way here too unless the pruner cuts it sooner, so pruners that the
    replayed study already used cannot be judged: its pruned trials have no later reports.

    Example:
        >>> study = optuna.load_study(study_name="bench-none-seed0", storage="sqlite:///none-seed0.db")
        >>> replay = replay_pruner(study.trials, optuna.pruners.MedianPruner(), study.direction)
        >>> replay.steps_saved, replay.best_value  # doctest: +SKIP
    """
    study = optuna.create_study(
        study_name="replay",  # Hyperband assigns brackets by hashing the study name: keep replays repeatable
        storage=InMemoryStorage(),
        direction=direction,
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(0),
    )
    pick_best = max if direction == StudyDirection.MAXIMIZE else min
    spent, pruned, kept, full = 0.0, 0, [], []
    finished = sorted((t for t in trials if t.state.is_finished()), key=lambda t: t.number)
    for original in finished:
        steps = original.user_attrs.get("steps", 0)
        curve = sorted(original.intermediate_values.items())
        trial = study.ask()
        cut_at = None
        for k, (step, value) in enumerate(curve, 1):
            trial.report(value, step)
            if trial.should_prune():
                cut_at = k
                break
        if original.state == TrialState.COMPLETE:
            full.append(original.value)
        if cut_at is not None:
            spent += steps * cut_at / len(curve)
            pruned += 1
            study.tell(trial, state=TrialState.PRUNED)
            continue
        spent += steps
        if original.state == TrialState.COMPLETE:
            kept.append(original.value)
            study.tell(trial, original.value)
        else:
            study.tell(trial, state=original.state)
    return Replay(
        steps=spent,
        full_steps=sum(t.user_attrs.get("steps", 0) for t in finished),
        pruned=pruned,
        best_value=pick_best(kept) if kept else None,
        full_best_value=pick_best(full) if full else None,
    )


def thin_reports(trials: Sequence[FrozenTrial], every: int) -> list[FrozenTrial]:
    """``trials`` as if each had reported only every ``every``-th time, renumbered 1, 2, ….

    Each trial keeps its reports ``every``, ``2 * every``, … and its last one (where early stopping or a
    failure ended it). A report's value is the trial's best so far, which counts the evaluations
    dropped in between: a trial that evaluated less often could have missed a peak there, so a thinned
    replay's best values are, if anything, a little high.

    Example:
        >>> [t.intermediate_values for t in thin_reports(study.trials, 2)]  # doctest: +SKIP
        [{1: 0.61, 2: 0.70, 3: 0.72}, ...]  # from reports 2, 4, 6 of six
    """
    if every < 1:
        raise ConfigError(f"every must be positive, but got {every}")
    thinned = []
    for trial in trials:
        curve = [value for _, value in sorted(trial.intermediate_values.items())]
        kept = [value for k, value in enumerate(curve, 1) if k % every == 0 or k == len(curve)]
        thin = copy.copy(trial)  # shallow: the curve is replaced, never changed in place
        thin.intermediate_values = dict(enumerate(kept, 1))
        thinned.append(thin)
    return thinned


def signal_curves(trials: Sequence[FrozenTrial], metric: str, direction: StudyDirection) -> list[FrozenTrial]:
    """``trials`` as if each had reported its best validation ``metric`` so far instead of the study's.

    Read from the ``evaluations`` user attribute (every evaluation's metrics) that ``search.run`` trials
    keep, so a pruner can be replayed on a signal the study did not report: ``roc_auc`` or ``loss``
    still move while a trial predicts only the majority class, where its F1 is tied with every other
    such trial's. The signal is turned to the study's ``direction`` (a minimised loss is negated in a
    maximised study); trial values stay those of the study's metric. Trials without the attribute
    (studies from before it existed) are dropped.

    Example:
        >>> auc_trials = signal_curves(study.trials, "roc_auc", study.direction)  # doctest: +SKIP
        >>> replay_pruner(auc_trials, optuna.pruners.MedianPruner(), study.direction)  # doctest: +SKIP
    """
    sign = 1.0 if maximizes(metric) == (direction == StudyDirection.MAXIMIZE) else -1.0
    pick_best = max if direction == StudyDirection.MAXIMIZE else min
    curves = []
    for trial in trials:
        if "evaluations" not in trial.user_attrs:
            continue
        best = accumulate((sign * e[metric] for e in trial.user_attrs["evaluations"]), pick_best)
        signalled = copy.copy(trial)  # shallow: the curve is replaced, never changed in place
        signalled.intermediate_values = dict(enumerate(best, 1))
        curves.append(signalled)
    return curves


def replay_pruner_settings(
    trials: Sequence[FrozenTrial], direction: StudyDirection, *, epochs: int, evals_per_epoch: int
) -> dict[PrunerSetting, Replay]:
    """:func:`replay_pruner` for each of :data:`PRUNER_SETTINGS`, as ``search.run`` would build it for
    trials of ``epochs`` epochs with ``evals_per_epoch`` reports each."""
    return {
        setting: replay_pruner(
            trials, setting.build(epochs=epochs, evals_per_epoch=evals_per_epoch), direction
        )
        for setting in PRUNER_SETTINGS
    }


def replay_report_rates(
    trials: Sequence[FrozenTrial], direction: StudyDirection, *, epochs: int, evals_per_epoch: int
) -> dict[int, dict[PrunerSetting, Replay]]:
    """:func:`replay_pruner_settings` at ``evals_per_epoch`` reports an epoch and at each rate that divides
    it (via :func:`thin_reports`), keyed by reports an epoch, most first: what reporting less often costs
    the pruner."""
    return {
        evals_per_epoch // every: replay_pruner_settings(
            thin_reports(trials, every), direction, epochs=epochs, evals_per_epoch=evals_per_epoch // every
        )
        for every in range(1, evals_per_epoch + 1)
        if evals_per_epoch % every == 0
    }


# Signals a pruner is replayed on besides the one the study reported: both move while a trial still
# predicts only the majority class, where every such trial's F1 is the same.
OTHER_SIGNALS = ("roc_auc", "loss")


def replay_signals(
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
    *,
    reported: str,
    metric: str,
    epochs: int,
    evals_per_epoch: int,
) -> dict[str, dict[int, dict[PrunerSetting, Replay]]]:
    """:func:`replay_report_rates` on the study's own reports (keyed ``reported``, the signal its pruner
    judged) and, when every finished trial kept its evaluations, on ``metric`` and each of
    :data:`OTHER_SIGNALS` (via :func:`signal_curves`): which signal tells a pruner soonest which trials
    to cut. Trial values, and so the best value kept, stay ``metric``'s.
    """
    rates = {"epochs": epochs, "evals_per_epoch": evals_per_epoch}
    by_signal = {reported: replay_report_rates(trials, direction, **rates)}
    if all("evaluations" in t.user_attrs for t in trials if t.state.is_finished()):
        for signal in (metric, *OTHER_SIGNALS):
            if signal not in by_signal:
                by_signal[signal] = replay_report_rates(
                    signal_curves(trials, signal, direction), direction, **rates
                )
    return by_signal

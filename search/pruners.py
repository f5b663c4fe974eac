"""The pruners a study can use, when they may first judge a trial, and which trials they must spare.

A trial reports its best validation value so far after each evaluation (step 1, 2, …), so its curve
never gets worse; a trial whose curve is flat has stopped improving.
"""

from __future__ import annotations

import math

import optuna
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial

from search.config import MEDIAN_STARTUP_TRIALS, PrunerName
from trainers.errors import ConfigError


class SpareImprovingPruner(optuna.pruners.BasePruner):
    """Cut a trial only when ``pruner`` would and its best value has not improved for ``patience`` reports.

    Early in training a slow starter and a dead trial both score below the median, but the slow starter's
    best is rising while the dead one's is flat (a run stuck at the majority class repeats one value).
    Sparing a trial whose best rose within its last ``patience`` reports keeps slow starters; the trial
    is judged again at each later report. A trial with ``patience`` or fewer reports has shown no stall
    yet and is spared too.

    Unlike :class:`optuna.pruners.PatientPruner`, a value equal to the earlier best counts as no
    improvement, which a best-so-far curve needs: it never falls, so a fall can never signal a stall.

    Args:
        pruner: Decides among the trials that have stalled; asked at every report, so its own
            bookkeeping (Hyperband's rungs) stays complete.
        patience: Reports without improvement after which a trial may be cut; 0 spares none.

    Example:
        >>> pruner = SpareImprovingPruner(optuna.pruners.MedianPruner(), patience=1)
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, patience: int) -> None:
        if patience < 0:
            raise ConfigError(f"patience must be >= 0, but got {patience}")
        self.pruner = pruner
        self.patience = patience

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        cut = self.pruner.prune(study, trial)
        return cut and self._stalled(trial, study.direction)

    def _stalled(self, trial: FrozenTrial, direction: StudyDirection) -> bool:
        if self.patience == 0:
            return True
        curve = [value for _, value in sorted(trial.intermediate_values.items())]
        if len(curve) <= self.patience:
            return False
        before, recent = curve[: -self.patience], curve[-self.patience :]
        if direction == StudyDirection.MAXIMIZE:
            return max(recent) <= max(before)
        return min(recent) >= min(before)


def make_pruner(
    name: PrunerName,
    *,
    evaluations: int,
    warmup: int = 0,
    patience: int = 0,
    startup_trials: int = MEDIAN_STARTUP_TRIALS,
) -> optuna.pruners.BasePruner:
    """The pruner.

    Args:
        name: ``median``, ``hyperband`` or ``none``.
        evaluations: How many times a full trial reports (epochs × evals per epoch).
        warmup: Reports a trial makes before it may be pruned; the first report is step 1.
        patience: Reports a trial's best must stay flat before it may be pruned (see
            :class:`SpareImprovingPruner`); 0 lets the pruner alone decide.
        startup_trials: Trials the median pruner lets finish before it judges any; Hyperband, which
            compares trials within its brackets, ignores it.
    """
    if name == "median":
        # Optuna judges a report whose step >= n_warmup_steps; steps count reports from 1.
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup + 1
        )
    elif name == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=warmup + 1, max_resource=max(evaluations, warmup + 1), reduction_factor=3
        )
    else:
        return optuna.pruners.NopPruner()
    return SpareImprovingPruner(pruner, patience) if patience else pruner


def describe(pruner: optuna.pruners.BasePruner) -> str:
    """The pruner as a pruned trial's reason names it: the wrapped pruner, not the guard around it.

    Example:
        >>> describe(SpareImprovingPruner(optuna.pruners.MedianPruner(), patience=1))
        'MedianPruner (after 1 report without a new best)'
    """
    if isinstance(pruner, SpareImprovingPruner):
        reports = "report" if pruner.patience == 1 else "reports"
        return f"{describe(pruner.pruner)} (after {pruner.patience} {reports} without a new best)"
    return type(pruner).__name__


def reports_within(epochs: float, evals_per_epoch: int) -> int:
    """Reports a trial makes within its first ``epochs`` (a pruner's warm-up or patience, in reports).

    Example:
        >>> reports_within(1.0, evals_per_epoch=2)  # reports at epochs 0.5 and 1.0; first judged at 1.5
        2
    """
    return math.ceil(epochs * evals_per_epoch - 1e-9)

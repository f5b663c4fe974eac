"""The Optuna objective: a trial's config, trained once, reported and pruned through the callback.

In a multi-objective study it returns one value per objective (see :mod:`search.objectives`) and
reports nothing: Optuna's pruners and intermediate values take one objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from search.objectives import COSTS, architecture_costs
from search.progress import TrialLine
from search.pruners import describe
from search.storage import worker_id
from search.tracking import RunLink
from studies.spaces import SearchSpace, readable_params, suggest
from trainers.config import TrainConfig, maximizes
from trainers.efficiency import LatencyProtocol
from trainers.loop import FAILURES, EvalRecord, Status, train
from trainers.models import config_layers, load_model_config
from trainers.task import Task


class Tracker(Protocol):
    """What the objective needs of a tracker (see :class:`search.tracking.StudyTracker`)."""

    def start_trial(self, number: int, config: dict[str, Any], params: dict[str, Any]) -> RunLink | None: ...
    def log_eval(self, record: dict[str, Any]) -> None: ...
    def finish_trial(self, state: str, summary: dict[str, Any]) -> None: ...


@dataclass
class Objective:
    """Train ``suggest(trial, base, space)`` on the shared ``task`` and return its best validation metric.

    The trial reports its best validation ``signal`` so far (default: the metric) after every evaluation
    (step = evaluation number) and stops when the pruner says so. Early stopping ends a trial at its best
    evaluation, whose value is returned. Collapsed and diverged runs end PRUNED with ``status`` and ``reason`` user attributes.

    With several ``objectives`` it returns each at the best evaluation (a cost is its architecture's,
    measured once per study under ``latency``) and neither reports nor asks the pruner.
    """

    base: TrainConfig
    space: SearchSpace
    task: Task
    tracker: Tracker
    signal: str | None = None
    progress: bool = True
    objectives: Sequence[str] = ()
    latency: LatencyProtocol = LatencyProtocol()

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr("worker", worker_id())
        config = suggest(trial, self.base, self.space)
        applicable = config.applicable_dict()
        trial.set_user_attr("config", applicable)
        if config.distills:
            depth = load_model_config(self.task.base_checkpoint).num_hidden_layers
            trial.set_user_attr("student_layers", list(config_layers(config, depth)))
        params = readable_params(trial.params, trial.user_attrs)
        run = self.tracker.start_trial(trial.number, applicable, params)
        if run is not None:
            trial.set_user_attr("wandb_run", run.path)
            if run.url:
                # A user attribute is what optuna-dashboard (reports.serve) shows of each trial.
                trial.set_user_attr("wandb_url", run.url)
        line = TrialLine(
            trial.number,
            params,
            epochs=config.epochs,
            metric=config.metric,
            enabled=self.progress,
        )
        signal = self.signal or config.metric
        reported: list[float] = []
        # Every evaluation's metrics, not only the reported one, so a replay can judge other signals.
        evaluations: list[dict[str, float]] = []
        pick_best = max if maximizes(signal) else min
        # Optuna's pruners and intermediate values take one objective (search.objectives says why).
        prunable = len(self.objectives) < 2

        def on_eval(record: EvalRecord) -> bool:
            # The best value so far, not the latest: a trial is worth its best epoch, which it keeps.
            reported.append(pick_best([*reported, record.validation.value(signal)]))
            if prunable:
                trial.report(reported[-1], step=len(reported))
            evaluations.append({"epoch": record.epoch, **record.validation.scalars()})
            trial.set_user_attr("evaluations", evaluations)
            self.tracker.log_eval(record.to_dict())
            line.update(record.epoch, record.validation.value(config.metric))
            return prunable and trial.should_prune()

        try:
            result = train(config, self.task, on_eval=on_eval, progress=False)
        except BaseException as error:
            self.tracker.finish_trial("failed", {"reason": repr(error)})
            if not isinstance(error, KeyboardInterrupt):  # Ctrl-C gets one line, from run_main
                line.finish("failed", None, 0.0, repr(error))
            raise

        best = result.best
        value = best.validation.value(config.metric) if best else None
        if result.status in FAILURES:  # cut short like a pruned trial; counts towards the target
            state = result.status.value
        else:
            state = "pruned" if result.status is Status.STOPPED else "complete"
        reason = result.reason
        if state == "pruned":
            reason = (
                f"{describe(trial.study.pruner)} pruned it at epoch {result.history[-1].epoch:.2f}"
                f" (best {signal} so far {reported[-1]:.4f})"
            )
        costs = (
            architecture_costs(trial.study, result.model, self.task, self.latency)
            if state == "complete" and set(self.objectives) & set(COSTS)
            else {}
        )
        objectives = (
            {name: costs[name] if name in COSTS else best.validation.value(name) for name in self.objectives}
            if state == "complete" and len(self.objectives) > 1
            else {}
        )
        summary = {
            "status": result.status.value if state != "pruned" else "pruned",
            "reason": reason,
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "best_epoch": best.epoch if best else None,
            "value": value,
            **({f"best_val_{k}": v for k, v in best.validation.scalars().items()} if best else {}),
            **costs,
            **{f"objective:{name}": figure for name, figure in objectives.items()},
        }
        for key, item in summary.items():
            trial.set_user_attr(key, item)
        self.tracker.finish_trial(state, summary)
        line.finish(state, value, result.history[-1].epoch if result.history else 0.0, reason or "")
        if state != "complete":
            raise optuna.TrialPruned(reason or state)
        return list(objectives.values()) if objectives else value

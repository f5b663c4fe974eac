"""What the demo page says of its model: the folder's architecture and size, and, when the run that
wrote it left a ``metrics.json`` beside it, the method and test metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reports.serve.classifier import Classifier
from reports.serve.schemas import Metric, ModelCard
from search.train import SUMMARY_METRICS
from trainers.efficiency import size_on_disk


def model_card(classifier: Classifier) -> ModelCard:
    """The card of ``classifier``'s folder.

    ``metrics.json`` beside the folder is read in either form: one run's (``trainers.train``: its test
    metrics) or a retraining's (``search.train``, and each method of ``search.experiment``: the
    winner's mean and 95% CI over seeds). Without one, the card has no method and no test metrics.
    """
    method, test = _trained(classifier.folder.parent / "metrics.json")
    return ModelCard(
        name=str(classifier.folder),
        method=method,
        labels=classifier.labels,
        layers=classifier.layers,
        parameters=classifier.parameters,
        size_bytes=size_on_disk(classifier.folder),
        max_length=classifier.max_length,
        test=test,
    )


def _trained(path: Path) -> tuple[str | None, dict[str, Metric]]:
    """The method and test metrics that ``path`` records, or nothing when it records neither."""
    try:
        report: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, {}
    if not isinstance(report, dict):
        return None, {}
    if "candidates" in report:  # search.train
        winner = next((c for c in report["candidates"] if c.get("trial") == report.get("winner")), None)
        if winner is None:
            return None, {}
        test = {
            name: Metric(mean=value["mean"], ci95=value["ci95"], n=value["n"])
            for name, value in (winner.get("test") or {}).items()
            if name in SUMMARY_METRICS and value.get("n")
        }
        return winner.get("config", {}).get("method"), test
    scores = report.get("test") or {}
    test = {name: Metric(mean=scores[name]) for name in SUMMARY_METRICS if name in scores}
    return report.get("method"), test

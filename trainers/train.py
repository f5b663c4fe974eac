"""Train and evaluate one configuration: ``python -m trainers.train --method even --out runs/even``.

Writes ``OUT/metrics.json`` (status, validation and test metrics, label names, confusion matrix,
per-evaluation history) and ``OUT/model``, a folder ``AutoModelForSequenceClassification`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.cli import ArgumentParser, add_config_arguments, config_from_args, run_main
from trainers.config import TrainConfig

if TYPE_CHECKING:
    from trainers.loop import TrainResult
    from trainers.task import Task


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainers.train",
        description="Train one configuration of odd/even-layer distillation, LoRA or the teacher.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for metrics.json and model/")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache for tokens and teachers (default: ~/.cache/toxitune)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(parser)
    return parser


def run_report(config: TrainConfig, task: Task, result: TrainResult) -> dict[str, Any]:
    """What ``metrics.json`` holds for a finished run; the test split is read here, after training.

    Beside the metrics it keeps every test prediction (``test_predictions``, in split order, with
    ``test_labels``), so runs can be compared example by example, and the parameters the run trained.
    """
    from trainers.device import cuda_graphs, mixed_precision, training_device
    from trainers.evaluate import metrics_from_logits, split_logits

    report: dict[str, Any] = {
        "method": config.method,
        "label_names": list(task.label_names),
        **result.summary(),
        "validation": result.best.validation.to_dict() if result.best else None,
        "test": None,
        "confusion_matrix": None,
        "test_labels": task.test.labels.tolist(),
        "test_predictions": None,
        "parameters": {
            "total": sum(p.numel() for p in result.model.parameters()),
            "trained": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
        },
        "teacher": task.teacher_metrics,
        "config": config.to_dict(),
        "device": {
            "type": training_device().type,
            "precision": mixed_precision(),
            "cuda_graphs": cuda_graphs(),
        },
    }
    if result.best is not None:
        pad = task.tokenizer.pad_token_id
        logits = split_logits(result.model, task.test, pad_token_id=pad, batch_size=config.eval_batch_size)
        test = metrics_from_logits(logits, task.test.labels, task.label_names)
        report["test"] = test.to_dict()
        report["confusion_matrix"] = test.confusion
        report["test_predictions"] = logits.argmax(dim=-1).tolist()
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    # Imported once the arguments are good: torch takes seconds to load, --help and typos should not wait.
    from trainers.cache import default_cache_dir
    from trainers.loop import FAILURES, train
    from trainers.models import save_classifier
    from trainers.prepare import describe_teacher, prepare_task

    cache_dir = args.cache_dir or default_cache_dir()
    task = prepare_task(config, cache_dir=cache_dir, progress=not args.no_progress)
    if task.teacher_metrics:
        print(describe_teacher(task.teacher_metrics, "macro_f1"))
    checkpoint = args.out / "checkpoint.pt"
    result = train(config, task, progress=not args.no_progress, checkpoint=checkpoint)
    report = run_report(config, task, result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    if result.best is not None:
        save_classifier(result.model, task.tokenizer, args.out / "model")
    checkpoint.unlink(missing_ok=True)
    print(_summary_line(report, args.out))
    return 1 if result.status in FAILURES else 0


def _summary_line(report: dict[str, Any], out: Path) -> str:
    line = f"{report['method']}: {report['status']}"
    if report["reason"]:
        line += f" ({report['reason']})"
    if report["test"]:
        best = report["best"]
        line += (
            f"; best epoch {best['epoch']:.2f}, validation macro-F1 {report['validation']['macro_f1']:.4f}, "
            f"test macro-F1 {report['test']['macro_f1']:.4f}, test accuracy {report['test']['accuracy']:.4f}"
        )
    return f"{line}; wrote {out}"


if __name__ == "__main__":
    run_main(main)

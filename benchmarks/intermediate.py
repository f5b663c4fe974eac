"""Cost per training step of the intermediate-layer losses: logits only, +hidden, +attention.

Each arm trains the odd student for one epoch on the same ``--train-size`` examples through
:func:`trainers.loop.train`; the seconds per step include one evaluation on ``--eval-size`` examples.
The hidden-state loss reads [CLS] states cached once per teacher (their one-off cost is reported);
the attention loss runs the teacher on every batch, with the eager attention kernel in both models.
The teacher keeps its untrained head (``--teacher-epochs 0``): only the time is measured here.

    python benchmarks/intermediate.py --train-size 512 --json intermediate.json
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_arguments, machine, write_json  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.config import DataConfig, LossConfig, TeacherConfig, TrainConfig  # noqa: E402

# Weights of each arm; only whether a weight is 0 changes the cost.
ARMS = {
    "logits": LossConfig(),
    "+hidden": LossConfig(w_cls=0.25, w_div=0.25, w_cos=0.25, w_hidden=0.25),
    "+attention": LossConfig(w_cls=0.2, w_div=0.2, w_cos=0.2, w_hidden=0.2, w_attn=0.2),
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python benchmarks/intermediate.py", description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--train-size", type=int, default=512, help="training examples (default: 512)")
    parser.add_argument("--eval-size", type=int, default=64, help="validation examples (default: 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainers.loop import train
    from trainers.prepare import prepare_task

    base = TrainConfig(
        method="odd",
        data=DataConfig(
            dataset=args.data, train_size=args.train_size, eval_size=args.eval_size, test_size=64
        ),
        teacher=TeacherConfig(name=args.teacher, epochs=0),
        epochs=1,
        batch_size=args.batch_size,
        patience=0,
    )
    figures: dict[str, Any] = {"machine": machine(), "train_size": args.train_size, "arms": {}}
    with tempfile.TemporaryDirectory() as cache:
        for name, loss in ARMS.items():
            config = dataclasses.replace(base, loss=loss)
            started = time.perf_counter()
            task = prepare_task(config, cache_dir=Path(cache), progress=False)
            prepared = time.perf_counter() - started
            result = train(config, task, progress=False)
            figures["arms"][name] = {
                "steps": result.steps,
                "seconds_per_step": result.seconds / result.steps,
                # The first arm tokenises and builds the teacher; +hidden adds the [CLS] cache once.
                "prepare_seconds": prepared,
            }
    logits = figures["arms"]["logits"]["seconds_per_step"]
    for name, arm in figures["arms"].items():
        arm["relative"] = arm["seconds_per_step"] / logits
        print(
            f"{name:>11}: {arm['seconds_per_step'] * 1000:7.1f} ms/step ({arm['relative']:.2f}x), "
            f"prepare {arm['prepare_seconds']:.1f} s"
        )
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    run_main(main)

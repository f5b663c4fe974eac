"""Pruning savings: the same study with ``--pruner median`` and ``--pruner none``.

Both studies use the same sampler seed and number of trials. The benchmark reports, for each, the
training steps all trials took together, the wall time and the best validation macro-F1.
Target: at least 50% fewer steps with the best F1 within 0.5 points.

    python benchmarks/pruning.py --method lora --trials 20 --train-size 2000 --json pruning.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_arguments, machine, write_json  # noqa: E402
from search import run  # noqa: E402
from search.study import best_trial  # noqa: E402


def run_study(pruner: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run one study with ``pruner``; return its steps, wall time and best value."""
    storage = f"sqlite:///{workdir}/{pruner}.db"
    argv = [
        "--method", args.method, "--trials", str(args.trials), "--pruner", pruner, "--seed", str(args.seed),
        "--study", f"bench-{pruner}", "--storage", storage, "--wandb-mode", "disabled", "--no-progress",
        "--dataset", args.data, "--teacher", args.teacher, "--epochs", str(args.epochs),
        "--cache-dir", str(args.cache_dir or workdir / "cache"),
    ]  # fmt: skip
    for flag in ("train_size", "eval_size"):
        if getattr(args, flag):
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    started = time.monotonic()
    run.main(argv)
    seconds = time.monotonic() - started
    study = optuna.load_study(study_name=f"bench-{pruner}", storage=storage)
    best = best_trial(study)
    return {
        "steps": sum(t.user_attrs.get("steps", 0) for t in study.trials),
        "seconds": round(seconds, 1),
        "best_value": best.value if best else None,
        "trials": len(study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--method", choices=("odd", "even", "lora"), default="lora")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed, the same for both studies")
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--eval-size", type=int)
    parser.add_argument("--cache-dir", type=Path, help="share a teacher and token cache between runs")
    parser.add_argument("--quick", action="store_true", help="a few trials on a small subset (CI smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 6, 2
        args.train_size, args.eval_size = args.train_size or 200, args.eval_size or 100
    with tempfile.TemporaryDirectory() as folder:
        results = {pruner: run_study(pruner, args, Path(folder)) for pruner in ("median", "none")}
    median, none = results["median"], results["none"]
    saved = 1 - median["steps"] / none["steps"] if none["steps"] else 0.0
    gap = (none["best_value"] or 0) - (median["best_value"] or 0)
    print(f"{'pruner':<8} {'trials':>6} {'pruned':>6} {'steps':>8} {'wall s':>8} {'best val F1':>12}")
    for name, r in results.items():
        best = "-" if r["best_value"] is None else f"{r['best_value']:.4f}"
        print(f"{name:<8} {r['trials']:>6} {r['pruned']:>6} {r['steps']:>8} {r['seconds']:>8} {best:>12}")
    print(
        f"median pruning saved {saved:.0%} of training steps; best F1 gap {gap * 100:+.2f} points (target: >=50%, <=0.5)"
    )
    write_json(
        args.json,
        {
            **results,
            "steps_saved": saved,
            "f1_gap_points": gap * 100,
            "args": vars(args) | {"cache_dir": str(args.cache_dir), "json": str(args.json)},
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

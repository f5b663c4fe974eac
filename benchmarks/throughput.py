"""Training throughput: toxitune's loop against the original course notebook's loop, same data and model.

Both train the even-layer student (half the teacher's layers) for one pass over the same training
examples. The notebook pads every text to ``--max-length`` tokens and runs the teacher on every step;
toxitune pads per batch of similar lengths and reads teacher logits computed once per study, whose
one-off cost is reported beside the steady-state figure. LoRA steps per second are compared the same
way. ``--profile`` adds the top operations of ten toxitune steps and how close the run came to the
floor set by this machine's matmul rate.

    python benchmarks/throughput.py --train-size 1024 --json throughput.json [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_arguments, machine, write_json  # noqa: E402
from trainers.cli import ArgumentParser, run_main  # noqa: E402
from trainers.config import DataConfig, LoraSettings, LossConfig, TeacherConfig, TrainConfig  # noqa: E402
from trainers.device import cuda_graphs, mixed_precision, synchronize, training_device  # noqa: E402
from trainers.errors import ConfigError, DataError  # noqa: E402
from trainers.evaluate import split_logits  # noqa: E402
from trainers.loop import build_model, make_optimizer, make_train_loader, train  # noqa: E402
from trainers.losses import distillation_loss  # noqa: E402
from trainers.models import build_student, load_classifier  # noqa: E402
from trainers.prepare import prepare_task  # noqa: E402
from trainers.task import Task  # noqa: E402

QUICK_TRAIN_SIZE = 128
EVAL_SIZE = 64
NOTEBOOK_LR = 5e-5
NOTEBOOK_TEMPERATURE = 2.0
LORA = LoraSettings(rank=8, alpha=32.0, dropout=0.1, target_modules=("query", "key", "value"))
LORA_LR = 2e-4


@dataclasses.dataclass(frozen=True)
class Timing:
    """One timed training pass."""

    steps: int
    examples: int
    seconds: float
    padded_tokens: int

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


# --- (a) the baseline: the original course notebook's loops, kept as the notebook wrote them ----------


def notebook_tokenise(
    tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int
) -> TensorDataset:
    """The notebook's up-front tokenisation: every text padded (or cut) to ``max_length`` tokens."""
    encoded = tokenizer(
        list(texts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    return TensorDataset(encoded["input_ids"], encoded["attention_mask"], torch.as_tensor(labels))


def timed_pass(
    loader: DataLoader,
    loss_of: Callable[[Tensor, Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> Timing:
    """One pass of the notebook's step (forward, backward, optimiser step) over ``loader``, timed.

    Args:
        loader: Batches of token ids, attention masks and labels, all padded to one width.
        loss_of: The loss of one batch, given its ids, masks and labels on ``device``.
        optimizer: Steps the trained parameters.
        device: Where the batches go; synchronised before the clock stops.
    """
    steps = tokens = 0
    started = time.perf_counter()
    for batch in loader:
        input_ids, attention_mask, labels = (t.to(device) for t in batch)
        loss_of(input_ids, attention_mask, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
        tokens += input_ids.numel()
    synchronize(device)
    return Timing(steps, len(loader.dataset), time.perf_counter() - started, tokens)


def start_notebook(seed: int) -> None:
    """Seed, and restore the PyTorch defaults the notebook ran on.

    toxitune's run is timed first, and without autocast it lets float32 matmuls use TF32.
    """
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False


def notebook_distillation(
    teacher: nn.Module, dataset: TensorDataset, *, batch_size: int, device: torch.device, seed: int = 0
) -> Timing:
    """The notebook's distillation loop for one pass over ``dataset``; only the loop is timed.

    The teacher runs a forward pass on every step; the loss is the mean of cross-entropy, the
    ``T²``-scaled KL divergence and the cosine embedding loss; plain Adam, no clipping, no schedule.

    Args:
        teacher: The full-depth classifier; the student copies its even layers.
        dataset: Token ids, attention masks and labels from :func:`notebook_tokenise`.
        batch_size: Examples per step.
        device: Where to train: the device toxitune's run used, so both are timed on the same one.
        seed: Seed of the shuffle and of dropout.
    """
    start_notebook(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    teacher = teacher.to(device).eval()
    student = build_student(teacher, "even").to(device).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=NOTEBOOK_LR)
    ce_loss = nn.CrossEntropyLoss()
    kl_loss = nn.KLDivLoss(reduction="batchmean")
    cos_loss = nn.CosineEmbeddingLoss()
    temperature = NOTEBOOK_TEMPERATURE

    def loss_of(input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits
        student_logits = student(input_ids=input_ids, attention_mask=attention_mask).logits
        loss_cls = ce_loss(student_logits, labels)
        loss_div = (
            kl_loss(
                F.log_softmax(student_logits / temperature, dim=-1),
                F.softmax(teacher_logits / temperature, dim=-1),
            )
            * temperature
            * temperature
        )
        loss_cos = cos_loss(student_logits, teacher_logits, torch.ones(len(labels), device=device))
        return (loss_cls + loss_div + loss_cos) / 3

    return timed_pass(loader, loss_of, optimizer, device)


def notebook_lora(
    model: nn.Module, dataset: TensorDataset, *, batch_size: int, device: torch.device, seed: int = 0
) -> Timing:
    """The notebook's LoRA loop for one pass: peft adapters on q/k/v, Adam, cross-entropy; loop timed.

    Args:
        model: The full-depth classifier, without adapters.
        dataset: Token ids, attention masks and labels from :func:`notebook_tokenise`.
        batch_size: Examples per step.
        device: Where to train, as for :func:`notebook_distillation`.
        seed: Seed of the shuffle, the adapters and dropout.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    start_notebook(seed)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=LORA.rank,
        lora_alpha=LORA.alpha,
        lora_dropout=LORA.dropout,
        target_modules=list(LORA.target_modules),
    )
    model = get_peft_model(model, config).to(device).train()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LORA_LR)
    ce_loss = nn.CrossEntropyLoss()

    def loss_of(input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        return ce_loss(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)

    return timed_pass(loader, loss_of, optimizer, device)


# --- (b) toxitune -----------------------------------------------------------------------------------


def warm_up(device: torch.device) -> None:
    """Pay an accelerator's one-time start-up (context, BLAS handles, autograd) before anything is timed.

    toxitune's run is timed first, so without this it alone would carry those seconds.
    """
    if device.type == "cpu":
        return
    layer = nn.Linear(64, 64).to(device)
    layer(torch.randn(8, 64, device=device)).sum().backward()
    synchronize(device)


def toxitune_config(method: str, args: argparse.Namespace) -> TrainConfig:
    """One epoch of ``method`` on the benchmark's subset, with toxitune's defaults otherwise.

    The teacher keeps an untrained head: throughput does not depend on what the head predicts.
    """
    lora = method == "lora"
    return TrainConfig(
        method=method,
        data=DataConfig(
            dataset=args.data,
            train_size=args.train_size,
            eval_size=EVAL_SIZE,
            test_size=EVAL_SIZE,
            max_length=args.max_length,
        ),
        teacher=TeacherConfig(name=args.teacher, epochs=0),
        loss=LossConfig(temperature=NOTEBOOK_TEMPERATURE),
        lora=LORA,
        epochs=1,
        lr=LORA_LR if lora else NOTEBOOK_LR,
        batch_size=args.lora_batch_size if lora else args.batch_size,
        patience=0,
        # One evaluation at the end of the only epoch; a collapse verdict there would mean nothing.
        collapse_warmup_epochs=1e9,
    )


def padded_batches(task: Task, config: TrainConfig) -> list[tuple[int, int]]:
    """``(batch, width)`` of every batch that :func:`train` sees in its first epoch.

    Built by the loop's own ``make_train_loader`` with the run's seed, so they are the same batches.
    """
    loader = make_train_loader(config, task, graphs=cuda_graphs())
    return [tuple(batch["input_ids"].shape) for batch in loader]


def fastest(run: Callable[[], Timing], repeat: int) -> tuple[Timing, list[float]]:
    """The fastest of ``repeat`` timed passes, and every pass's seconds.

    A process's first pass on a GPU also loads the kernels it uses, on whichever loop meets them first;
    later passes find them loaded, as every trial of a study after its worker's first does.
    """
    timings = [run() for _ in range(repeat)]
    return min(timings, key=lambda timing: timing.seconds), [timing.seconds for timing in timings]


def toxitune_run(config: TrainConfig, task: Task) -> Timing:
    """Time one :func:`train` call: model building, every step and the end-of-epoch evaluation."""
    started = time.perf_counter()
    result = train(config, task, progress=False)
    seconds = time.perf_counter() - started
    tokens = sum(b * t for b, t in padded_batches(task, config))
    return Timing(result.steps, len(task.train), seconds, tokens)


def toxitune_steps(config: TrainConfig, task: Task) -> Iterator[None]:
    """The body of :func:`train`'s loop, one step per ``next()``, cycling over epochs as needed.

    Evaluation and bookkeeping are left out: this is what the profiler should see.
    """
    from transformers import get_linear_schedule_with_warmup

    model = build_model(config, task)
    model.train()
    loader = make_train_loader(config, task)
    optimizer = make_optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10**9)
    while True:
        for batch in loader:
            with record_function("step.forward"):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                parts = distillation_loss(
                    logits, task.teacher_logits[batch["index"]], batch["labels"], config.loss, epoch=0.0
                )
            with record_function("step.backward"):
                parts.total.backward()
            with record_function("step.optimizer"):
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            yield


# --- the matmul-bound floor -----------------------------------------------------------------------------


def forward_flops(model: nn.Module, shapes: Sequence[tuple[int, int]]) -> float:
    """Multiply-add FLOPs of one forward pass of a BERT-style classifier over batches of ``shapes``.

    Every encoder weight is used once per token (2 FLOPs per parameter per token); attention adds
    ``4·T²·d`` per sequence and layer (scores and weighted sum); pooler and head run once per sequence.
    Embedding look-ups cost no multiplies.
    """
    base = model.base_model
    config = model.config
    encoder = sum(p.numel() for p in base.encoder.parameters())
    embeddings = sum(p.numel() for p in base.embeddings.parameters())
    per_sequence = sum(p.numel() for p in model.parameters()) - encoder - embeddings
    layers, width = config.num_hidden_layers, config.hidden_size
    flops = 0.0
    for batch, length in shapes:
        flops += 2 * encoder * batch * length + 4 * layers * width * batch * length**2
        flops += 2 * per_sequence * batch
    return flops


def matmul_rate(rows: Sequence[int], width: int, inner: int, *, seconds: float = 0.25) -> dict[str, float]:
    """Best float32 ``torch.matmul`` rate in GFLOP/s per shape, on shapes like the encoder's.

    Args:
        rows: Token counts per batch (``batch × width``) to try.
        width: The hidden size.
        inner: The feed-forward size.
        seconds: Time spent timing each shape.
    """
    rates = {}
    for m in sorted(set(rows)):
        for k, n in ((width, inner), (inner, width), (width, width)):
            a, b = torch.randn(m, k), torch.randn(k, n)
            torch.matmul(a, b)
            best, spent = math.inf, 0.0
            while spent < seconds:
                started = time.perf_counter()
                torch.matmul(a, b)
                elapsed = time.perf_counter() - started
                best, spent = min(best, elapsed), spent + elapsed
            rates[f"({m},{k})x({k},{n})"] = 2 * m * k * n / best / 1e9
    return rates


def floor(flops: float, rate_gflops: float, measured: float) -> dict[str, float]:
    """The time ``flops`` take at ``rate_gflops``, and the share of ``measured`` seconds it makes up."""
    seconds = flops / (rate_gflops * 1e9)
    return {
        "gflops": flops / 1e9,
        "floor_seconds": seconds,
        "measured_seconds": measured,
        "achieved_pct": 100 * seconds / measured,
    }


def top_host_ops(ranked: Sequence[Any], total_us: float, count: int = 12) -> list[dict[str, Any]]:
    """The first ``count`` profiler events of ``ranked``: calls, self host time and its share of ``total_us``."""
    return [
        {
            "name": e.key,
            "calls": e.count,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "pct": 100 * e.self_cpu_time_total / total_us,
        }
        for e in ranked[:count]
    ]


def profile_steps(config: TrainConfig, task: Task, steps: int) -> dict[str, Any]:
    """Profile ``steps`` toxitune distillation steps after one warm-up; top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    runner = toxitune_steps(config, task)
    next(runner)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            next(runner)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(
        (e for e in events if not e.key.startswith("step.")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    return {
        "steps": steps,
        "self_cpu_ms": total / 1e3,
        "phases_ms": {e.key: e.cpu_time_total / 1e3 for e in events if e.key.startswith("step.")},
        "top_ops": top_host_ops(ops, total),
    }


def profile_device_run(config: TrainConfig, task: Task) -> dict[str, Any]:
    """Profile a second, warm :func:`train` call on the GPU: how long the GPU was busy, what the host did."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        result = train(config, task, progress=False)
        synchronize(training_device())
        seconds = time.perf_counter() - started
    events = prof.key_averages()
    busy = sum(e.self_device_time_total for e in events) / 1e6
    host = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "steps": result.steps,
        "seconds": seconds,
        "gpu_busy_seconds": busy,
        "host_self_seconds": host / 1e6,
        "top_ops": top_host_ops(ops, host),
    }


# --- the command ------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python benchmarks/throughput.py",
        description="Training throughput of toxitune's loop against the original notebook's loop.",
    )
    add_data_arguments(parser)
    parser.add_argument("--train-size", type=int, default=1024, help="training examples (default: 1024)")
    parser.add_argument("--batch-size", type=int, default=32, help="distillation batch (default: 32)")
    parser.add_argument("--lora-batch-size", type=int, default=16, help="LoRA batch (default: 16)")
    parser.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="tokens kept per text, and the notebook's padding (default: 128)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_TRAIN_SIZE} examples, a smoke run for CI"
    )
    parser.add_argument("--skip-lora", action="store_true", help="leave out the LoRA comparison")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each pass this many times and keep the fastest (default: 1; 2 on a GPU, where a "
        "process's first pass also loads kernels)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile toxitune's steps and compare with the matmul floor (on a GPU: profile a warm "
        "train() and report how long the GPU was busy)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.train_size = QUICK_TRAIN_SIZE
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be 1 or more, but got {args.repeat}")
    if not Path(args.data).exists():
        raise DataError(f"{args.data} does not exist; pass --data")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {**machine(), "load_average": os.getloadavg()[0]}
    device = training_device()
    info["precision"], info["cuda_graphs"] = mixed_precision(), cuda_graphs()
    print(
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} threads, "
        f"load average {info['load_average']:.2f} at start; training on {info['cuda'] or 'the CPU'}; "
        f"toxitune's precision {info['precision']}, CUDA graphs {'on' if info['cuda_graphs'] else 'off'}"
    )

    with tempfile.TemporaryDirectory(prefix="toxitune-throughput-") as cache:
        config = toxitune_config("even", args)
        started = time.perf_counter()
        task = prepare_task(config, cache_dir=Path(cache), progress=False)
        prepare_seconds = time.perf_counter() - started
        teacher = load_classifier(task.teacher_checkpoint, task.label_names)
        started = time.perf_counter()
        split_logits(
            teacher, task.train, pad_token_id=task.tokenizer.pad_token_id, batch_size=config.eval_batch_size
        )
        logits_seconds = time.perf_counter() - started

        warm_up(device)
        toxitune, toxitune_all = fastest(lambda: toxitune_run(config, task), args.repeat)
        dataset = notebook_tokenise(
            task.tokenizer, task.splits.train.texts, task.splits.train.labels, args.max_length
        )
        baseline, baseline_all = fastest(
            lambda: notebook_distillation(teacher, dataset, batch_size=args.batch_size, device=device),
            args.repeat,
        )
        figures: dict[str, Any] = {
            "baseline": baseline.examples_per_second,
            "toxitune": toxitune.examples_per_second,
            "ratio": toxitune.examples_per_second / baseline.examples_per_second,
            "toxitune_with_logits": toxitune.examples / (toxitune.seconds + logits_seconds),
            "logits_seconds": logits_seconds,
            "prepare_seconds": prepare_seconds,
            "train_size": len(task.train),
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "teacher": args.teacher,
            "data": args.data,
            "repeat": args.repeat,
            "distillation": {
                "baseline": dataclasses.asdict(baseline),
                "toxitune": dataclasses.asdict(toxitune),
                "seconds_per_repeat": {"baseline": baseline_all, "toxitune": toxitune_all},
                "real_tokens": sum(len(row) for row in task.train.input_ids),
            },
            "machine": info,
        }
        print_distillation(figures, baseline, toxitune)

        if not args.skip_lora:
            lora_config = toxitune_config("lora", args)
            lora_task = prepare_task(lora_config, cache_dir=Path(cache), progress=False)
            lora_toxitune, lora_toxitune_all = fastest(
                lambda: toxitune_run(lora_config, lora_task), args.repeat
            )
            # A fresh base model each time: peft adds its adapters in place.
            lora_baseline, lora_baseline_all = fastest(
                lambda: notebook_lora(
                    load_classifier(lora_task.base_checkpoint, lora_task.label_names),
                    dataset,
                    batch_size=args.lora_batch_size,
                    device=device,
                ),
                args.repeat,
            )
            figures["lora"] = {
                "baseline": lora_baseline.steps_per_second,
                "toxitune": lora_toxitune.steps_per_second,
                "ratio": lora_toxitune.steps_per_second / lora_baseline.steps_per_second,
                "batch_size": args.lora_batch_size,
                "runs": {
                    "baseline": dataclasses.asdict(lora_baseline),
                    "toxitune": dataclasses.asdict(lora_toxitune),
                },
                "seconds_per_repeat": {"baseline": lora_baseline_all, "toxitune": lora_toxitune_all},
            }
            print_lora(figures["lora"], lora_baseline, lora_toxitune)

        if args.profile and device.type == "cpu":
            figures["profile"] = profile_and_floor(config, task, teacher, args, baseline, toxitune)
            print_profile(figures["profile"])
        elif args.profile:
            # The CPU floor's matmul rate means nothing here: a GPU this size waits on the host.
            figures["profile"] = profile_device_run(config, task)
            print_device_profile(figures["profile"])

    figures["machine"]["load_average_end"] = os.getloadavg()[0]
    write_json(args.json, figures)
    return 0


def profile_and_floor(
    config: TrainConfig,
    task: Task,
    teacher: nn.Module,
    args: argparse.Namespace,
    baseline: Timing,
    toxitune: Timing,
) -> dict[str, Any]:
    """Top ops of ten toxitune steps, the matmul rate, and both runs measured against their floors."""
    profiled = profile_steps(config, task, steps=3 if args.quick else 10)
    student = build_student(teacher, "even")
    shapes = padded_batches(task, config)
    notebook_shapes = [
        (min(args.batch_size, baseline.examples - i), args.max_length)
        for i in range(0, baseline.examples, args.batch_size)
    ]
    model_config = teacher.config
    rows = [round(toxitune.padded_tokens / toxitune.steps), args.batch_size * args.max_length]
    rates = matmul_rate(rows, model_config.hidden_size, model_config.intermediate_size)
    rate = max(rates.values())
    # A training step is a forward and a backward that costs about two forwards.
    toxitune_flops = 3 * forward_flops(student, shapes)
    baseline_flops = 3 * forward_flops(student, notebook_shapes) + forward_flops(teacher, notebook_shapes)
    return {
        **profiled,
        "matmul_gflops": rate,
        "matmul_rates": rates,
        "toxitune": floor(toxitune_flops, rate, toxitune.seconds),
        "baseline": floor(baseline_flops, rate, baseline.seconds),
    }


# --- printing -------------------------------------------------------------------------------------------


def _row(name: str, timing: Timing, rate: str) -> str:
    per_step = timing.padded_tokens / timing.steps
    return f"  {name:<26}{timing.steps:>6}{timing.seconds:>10.1f}{rate:>12}{per_step:>14.0f}"


def print_distillation(figures: dict[str, Any], baseline: Timing, toxitune: Timing) -> None:
    real = figures["distillation"]["real_tokens"]
    print(
        f"\ndistillation, even-layer student, {figures['train_size']} examples, batch {figures['batch_size']}"
    )
    print(f"  {'':<26}{'steps':>6}{'seconds':>10}{'ex/s':>12}{'tokens/step':>14}")
    print(_row("notebook loop (baseline)", baseline, f"{baseline.examples_per_second:.1f}"))
    print(_row("toxitune train()", toxitune, f"{toxitune.examples_per_second:.1f}"))
    print(f"  ratio toxitune/baseline: {figures['ratio']:.2f}x")
    print(
        f"  padded tokens: notebook {baseline.padded_tokens}, toxitune {toxitune.padded_tokens}, real {real}"
    )
    print(
        f"  one-off, once per study: teacher logits on the training split {figures['logits_seconds']:.1f} s "
        f"(all of prepare_task, fresh cache: {figures['prepare_seconds']:.1f} s); counting the logits in "
        f"a single run, toxitune gives {figures['toxitune_with_logits']:.1f} ex/s"
    )
    print("  toxitune's time includes loading the model and one evaluation; the notebook's is its loop alone")


def print_lora(lora: dict[str, Any], baseline: Timing, toxitune: Timing) -> None:
    print(f"\nLoRA r={LORA.rank}, full depth, batch {lora['batch_size']}")
    print(f"  {'':<26}{'steps':>6}{'seconds':>10}{'steps/s':>12}{'tokens/step':>14}")
    print(_row("notebook loop (baseline)", baseline, f"{baseline.steps_per_second:.2f}"))
    print(_row("toxitune train()", toxitune, f"{toxitune.steps_per_second:.2f}"))
    print(f"  ratio toxitune/baseline: {lora['ratio']:.2f}x")


def print_top_ops(ops: list[dict[str, Any]], heading: str) -> None:
    """A table of :func:`top_host_ops`' rows."""
    print(f"  {heading:<48}{'calls':>7}{'self ms':>10}{'%':>7}")
    for op in ops:
        print(f"  {op['name'][:48]:<48}{op['calls']:>7}{op['self_cpu_ms']:>10.1f}{op['pct']:>7.1f}")


def print_profile(profile: dict[str, Any]) -> None:
    print(
        f"\nprofile of {profile['steps']} toxitune distillation steps ({profile['self_cpu_ms']:.0f} ms self CPU)"
    )
    phases = ", ".join(f"{k.split('.')[1]} {v:.0f} ms" for k, v in profile["phases_ms"].items())
    print(f"  phases: {phases}")
    print_top_ops(profile["top_ops"], "op")
    print(
        f"  matmul rate: {profile['matmul_gflops']:.1f} GFLOP/s (best of {len(profile['matmul_rates'])} shapes)"
    )
    for name in ("toxitune", "baseline"):
        run = profile[name]
        print(
            f"  {name}: {run['gflops']:.0f} GFLOP, floor {run['floor_seconds']:.1f} s, measured "
            f"{run['measured_seconds']:.1f} s: achieved {run['achieved_pct']:.0f}% of the matmul-bound floor"
        )


def print_device_profile(profile: dict[str, Any]) -> None:
    print(
        f"\nprofile of a second toxitune distillation train() ({profile['steps']} steps, profiled): "
        f"{profile['seconds']:.2f} s wall, GPU busy {profile['gpu_busy_seconds']:.2f} s "
        f"({100 * profile['gpu_busy_seconds'] / profile['seconds']:.0f}%), host self time {profile['host_self_seconds']:.2f} s"
    )
    print_top_ops(profile["top_ops"], "op (by host self time)")


if __name__ == "__main__":
    run_main(main)

"""The per-shape dispatch of CUDA-graphed logits, with a capture that needs no GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.device import cuda_graphs
from trainers.errors import ConfigError
from trainers.graphs import GraphedLogits, eager_logits
from trainers.models import load_classifier


class RecordingCapture:
    """Stands in for ``make_graphed_callables``: returns the module as is and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[torch.Size, ...], int]] = []
        self.samples: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, module, sample_args, warmup_passes):
        self.calls.append((tuple(arg.shape for arg in sample_args), warmup_passes))
        self.samples.append(sample_args)
        return module


def _batch(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 19, (rows, width), generator=generator)  # the tiny vocabulary's words
    attention_mask = torch.ones(rows, width, dtype=torch.int64)
    attention_mask[0, width // 2 :] = 0
    return input_ids, attention_mask


def test_each_input_shape_is_captured_once_in_order_of_arrival(tiny_checkpoint):
    model = load_classifier(str(tiny_checkpoint), ["no", "yes"]).train()
    capture = RecordingCapture()
    logits_of = GraphedLogits(model, capture=capture)
    for rows, width, seed in [(4, 16, 0), (4, 32, 1), (4, 16, 2), (2, 16, 3), (4, 32, 4)]:
        logits = logits_of(*_batch(rows, width, seed))
        assert logits.shape == (rows, 2)
    # Warm-up twice for the first capture of a run only, which meets lazy set-up work.
    assert capture.calls == [(((4, 16), (4, 16)), 2), (((4, 32), (4, 32)), 1), (((2, 16), (2, 16)), 1)]
    assert logits_of.shapes == [(4, 16), (4, 32), (2, 16)]


def test_capture_gets_copies_of_the_first_batch_not_the_batch_itself(tiny_checkpoint):
    # A graph keeps its sample arguments as its static inputs, which the next batch overwrites.
    model = load_classifier(str(tiny_checkpoint), ["no", "yes"]).train()
    capture = RecordingCapture()
    input_ids, attention_mask = _batch(4, 16, 0)
    GraphedLogits(model, capture=capture)(input_ids, attention_mask)
    sample_ids, sample_mask = capture.samples[0]
    assert torch.equal(sample_ids, input_ids) and sample_ids.data_ptr() != input_ids.data_ptr()
    assert torch.equal(sample_mask, attention_mask) and sample_mask.data_ptr() != attention_mask.data_ptr()


def test_graphed_logits_train_the_models_own_parameters_like_eager_logits(tiny_checkpoint):
    labels = torch.tensor([0, 1, 1, 0])
    batch = _batch(4, 16, 0)
    grads = []
    for make in (eager_logits, lambda model: GraphedLogits(model, capture=RecordingCapture())):
        torch.manual_seed(0)  # the same new head for both
        model = load_classifier(
            str(tiny_checkpoint), ["no", "yes"], hidden_dropout=0.0, attention_dropout=0.0
        )
        F.cross_entropy(make(model.train())(*batch), labels).backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    eager, graphed = grads
    assert eager.keys() == graphed.keys() and len(eager) == len(list(model.parameters()))
    for name in eager:
        torch.testing.assert_close(graphed[name], eager[name], msg=name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("0", False), ("1", "needs a GPU"), ("yes", "neither 1 nor 0")],
)
def test_cuda_graphs_follow_the_variable_and_refuse_what_cannot_run_here(monkeypatch, value, expected):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU's answers")
    if value is None:
        monkeypatch.delenv("TOXITUNE_CUDA_GRAPHS", raising=False)
    else:
        monkeypatch.setenv("TOXITUNE_CUDA_GRAPHS", value)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            cuda_graphs()
    else:
        assert cuda_graphs() is expected

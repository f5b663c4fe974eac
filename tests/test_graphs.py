"""Graphed logits with an eager stand-in for CUDA graphs: capture per shape, replay, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.device import cuda_graphs
from trainers.errors import ConfigError
from trainers.graphs import GraphedLogits, eager_logits
from trainers.models import load_classifier


class EagerShapeGraphs:
    """A capture's contract, op by op: fixed input, logits and gradient buffers that each replay overwrites."""

    captured: list[tuple[tuple[int, ...], int]] = []

    def __init__(self, model, params, sample, warmup_passes):
        EagerShapeGraphs.captured.append((tuple(sample[0].shape), warmup_passes))
        self.model, self.params = model, params
        self.input_ids, self.attention_mask = (tensor.clone() for tensor in sample)
        self.logits = torch.empty(len(sample[0]), model.config.num_labels)
        self.grad_logits = torch.empty_like(self.logits)
        self.grads = [torch.empty_like(param) for param in params]

    def replay_forward(self):
        with torch.enable_grad():
            self._live = self.model(input_ids=self.input_ids, attention_mask=self.attention_mask).logits
        self.logits.copy_(self._live)

    def replay_backward(self):
        grads = torch.autograd.grad(self._live, self.params, self.grad_logits)
        for static, grad in zip(self.grads, grads, strict=True):
            static.copy_(grad)


@pytest.fixture
def classifier(tiny_checkpoint):
    def load():
        torch.manual_seed(0)  # the same new head every time
        model = load_classifier(
            str(tiny_checkpoint), ["no", "yes"], hidden_dropout=0.0, attention_dropout=0.0
        )
        return model.train()

    return load


def _batch(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 19, (rows, width), generator=generator)  # the tiny vocabulary's words
    attention_mask = torch.ones(rows, width, dtype=torch.int64)
    attention_mask[0, width // 2 :] = 0
    return input_ids, attention_mask


def _step(logits_of, model, batch, labels):
    F.cross_entropy(logits_of(*batch), labels).backward()
    return {name: param.grad.clone() for name, param in model.named_parameters()}


def test_each_input_shape_is_captured_once_and_only_the_first_warms_up_twice(classifier):
    EagerShapeGraphs.captured = []
    model = classifier()
    logits_of = GraphedLogits(model, capture=EagerShapeGraphs)
    for rows, width, seed in [(4, 16, 0), (4, 32, 1), (4, 16, 2), (2, 16, 3), (4, 32, 4)]:
        assert logits_of(*_batch(rows, width, seed)).shape == (rows, 2)
    assert EagerShapeGraphs.captured == [((4, 16), 2), ((4, 32), 1), ((2, 16), 1)]
    assert logits_of.shapes == [(4, 16), (4, 32), (2, 16)]


def test_replays_of_one_shape_train_like_the_model_itself(classifier):
    # Two steps of one shape: the second must read its own batch and hand over fresh gradients,
    # though it replays into the same buffers.
    labels = torch.tensor([0, 1, 1, 0])
    batches = [_batch(4, 16, 0), _batch(4, 16, 1)]
    eager_model, graphed_model = classifier(), classifier()
    eager, graphed = eager_logits(eager_model), GraphedLogits(graphed_model, capture=EagerShapeGraphs)
    for batch in batches:
        torch.testing.assert_close(graphed(*batch), eager(*batch))
        expected, got = _step(eager, eager_model, batch, labels), _step(graphed, graphed_model, batch, labels)
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], msg=name)
        eager_model.zero_grad(set_to_none=True)
        graphed_model.zero_grad(set_to_none=True)


def test_a_backward_adds_to_gradients_the_parameters_already_hold(classifier):
    labels = torch.tensor([0, 1, 1, 0])
    batch = _batch(4, 16, 0)
    eager_model, graphed_model = classifier(), classifier()
    expected = _step(eager_logits(eager_model), eager_model, batch, labels)
    for param in graphed_model.parameters():
        param.grad = torch.ones_like(param)
    got = _step(GraphedLogits(graphed_model, capture=EagerShapeGraphs), graphed_model, batch, labels)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name] + 1, msg=name)


def test_gradients_zeroed_in_place_instead_of_set_to_none_fail_loudly(classifier):
    # They would still be the graph's own buffers, which the next replay overwrites before adding.
    model = classifier()
    logits_of = GraphedLogits(model, capture=EagerShapeGraphs)
    labels = torch.tensor([0, 1, 1, 0])
    _step(logits_of, model, _batch(4, 16, 0), labels)
    model.zero_grad(set_to_none=False)
    with pytest.raises(RuntimeError, match="set gradients to None between steps"):
        _step(logits_of, model, _batch(4, 16, 1), labels)


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

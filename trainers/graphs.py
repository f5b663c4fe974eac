"""CUDA graphs of a classifier's forward and backward passes, captured once per batch shape.

A MiniLM student at ~35 tokens a tweet keeps an H100 busy about 7% of a training step: the rest is the
host launching a few hundred small kernels one by one. A captured graph launches a whole pass at
once. A graph replays fixed shapes only, so batches are padded to a few widths
(:data:`GRAPH_WIDTH_MULTIPLE`) and each ``(batch, width)`` shape is captured the first time it comes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

# Widths padded to a multiple of this leave at most eight shapes per batch size at 128 tokens:
# eight captures a run, for a little more padding on a GPU that waits on launches, not on FLOPs.
GRAPH_WIDTH_MULTIPLE = 16

Capture = Callable[[nn.Module, tuple[Tensor, ...], int], nn.Module]
"""Turns a module, sample arguments and a number of warm-up passes into a module replaying graphs."""


def capture_cuda_graphs(module: nn.Module, sample_args: tuple[Tensor, ...], warmup_passes: int) -> nn.Module:
    """``torch.cuda.make_graphed_callables`` for one module, each capture with its own memory pool.

    Graphs that share a pool may overwrite each other's intermediate tensors unless they replay in
    the order they were captured, and batch shapes come in any order.
    """
    return torch.cuda.make_graphed_callables(
        module, sample_args, num_warmup_iters=warmup_passes, allow_unused_input=True
    )


class _Logits(nn.Module):
    """``model(input_ids, attention_mask).logits``: tensors in, a tensor out, as graph capture needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class GraphedLogits:
    """A classifier's logits through graphs of its forward and backward, one pair per input shape.

    Call it as the model in a training step: the logits it returns backpropagate into the model's
    parameters like the model's own. The model must be in training mode, and evaluation must call the
    model itself: a graph replays the dropout of the mode it was captured in. Set gradients to
    ``None`` after each optimizer step: a backward lends the graph's own gradient buffers to
    ``.grad``, which the next replay overwrites, so two backward passes must not accumulate
    (pytorch/pytorch#181723).

    Args:
        model: The classifier, on the GPU, in training mode.
        capture: Builds the replaying module for one shape; tests pass one that does not need a GPU.

    Example:
        >>> logits_of = GraphedLogits(model)  # doctest: +SKIP
        >>> loss = F.cross_entropy(logits_of(batch["input_ids"], batch["attention_mask"]), labels)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, capture: Capture = capture_cuda_graphs) -> None:
        # The parameters' gradient nodes are made while capturing, on the capture stream, and the graphs
        # keep them; backward orders their work after the replay with an event, as intended.
        warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
        self._model = model
        self._capture = capture
        self._graphed: dict[tuple[int, ...], nn.Module] = {}

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes captured so far, in capture order."""
        return list(self._graphed)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        shape = tuple(input_ids.shape)
        graphed = self._graphed.get(shape)
        if graphed is None:
            # A fresh wrapper per shape: capture replaces the forward of the module it is given. Lazy
            # set-up work must not be captured: the first capture warms up twice, later ones once.
            sample = (input_ids.clone(), attention_mask.clone())
            graphed = self._capture(_Logits(self._model), sample, 1 if self._graphed else 2)
            self._graphed[shape] = graphed
        return graphed(input_ids, attention_mask)


def eager_logits(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``model``'s logits, computed op by op: the CPU path, and the GPU one with graphs turned off."""

    def logits_of(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    return logits_of

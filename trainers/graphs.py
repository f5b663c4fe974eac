"""CUDA graphs of a classifier's forward and backward passes, captured once per batch shape.

A MiniLM student at ~35 tokens a tweet keeps an H100 busy about 7% of a training step: the rest is the
host launching a few hundred small kernels one by one. A captured graph launches a whole pass at
once. A graph replays fixed shapes only, so batches are padded to a few widths
(:data:`GRAPH_WIDTH_MULTIPLE`) and each ``(batch, width)`` shape is captured the first time it comes.

``torch.cuda.make_graphed_callables`` does the same, but returns the parameters' gradients through
autograd, which then copies each into ``.grad``: one more kernel per parameter per step, most of the
kernels a graphed step still launched on an H200 (benchmarks/RESULTS.md). Here the backward graph's
gradient buffers become ``.grad`` directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

# Widths padded to a multiple of this leave at most eight shapes per batch size at 128 tokens, so
# about ten captures a run, for a little more padding on a GPU that waits on launches, not on FLOPs.
GRAPH_WIDTH_MULTIPLE = 16


def _logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


class ShapeGraphs(Protocol):
    """The forward and backward passes of one input shape, replayed on fixed tensors.

    ``replay_forward`` reads ``input_ids`` and ``attention_mask`` and writes ``logits``;
    ``replay_backward`` reads ``grad_logits`` and writes ``grads``, one per parameter (``None`` for
    a parameter the logits do not depend on).
    """

    input_ids: Tensor
    attention_mask: Tensor
    logits: Tensor
    grad_logits: Tensor
    grads: Sequence[Tensor | None]

    def replay_forward(self) -> None: ...

    def replay_backward(self) -> None: ...


Capture = Callable[[nn.Module, Sequence[Tensor], tuple[Tensor, Tensor], int], ShapeGraphs]
"""Captures a model's passes for the shape of sample inputs: (model, parameters, sample, warm-up passes)."""


class CudaShapeGraphs:
    """:class:`ShapeGraphs` captured as two CUDA graphs sharing one private memory pool.

    A pool per shape: graphs that share a pool may overwrite each other's intermediate tensors unless
    they replay in the order they were captured, and batch shapes come in any order.
    """

    def __init__(
        self, model: nn.Module, params: Sequence[Tensor], sample: tuple[Tensor, Tensor], warmup_passes: int
    ) -> None:
        self.input_ids, self.attention_mask = (tensor.clone() for tensor in sample)
        # Lazy set-up (kernel loading, library handles, allocator growth) must happen outside a capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_passes):
                logits = _logits(model, self.input_ids, self.attention_mask)
                torch.autograd.grad(logits, params, torch.ones_like(logits), allow_unused=True)
            del logits  # its activations would stay allocated through the capture
        torch.cuda.current_stream().wait_stream(side)
        with warnings.catch_warnings():
            # Autograd warns that the parameters' gradient nodes were made on the warm-up stream; the
            # capture orders its work after them, and its gradients matched eager ones (RESULTS.md).
            warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
            self._forward = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._forward):
                self.logits = _logits(model, self.input_ids, self.attention_mask)
            self.grad_logits = torch.empty_like(self.logits)
            self._backward = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._backward, pool=self._forward.pool()):
                self.grads = torch.autograd.grad(self.logits, params, self.grad_logits, allow_unused=True)
        self.logits = self.logits.detach()

    def replay_forward(self) -> None:
        self._forward.replay()

    def replay_backward(self) -> None:
        self._backward.replay()


class _Replay(torch.autograd.Function):
    """Autograd's view of one graphed step: logits forward, parameter gradients backward.

    The parameters are not inputs, so autograd makes no gradient nodes for them; ``anchor``, an empty
    tensor that requires grad, is what makes autograd call :meth:`backward` at all.
    """

    @staticmethod
    def forward(ctx, graphs: ShapeGraphs, params, input_ids: Tensor, attention_mask: Tensor, anchor: Tensor):
        graphs.input_ids.copy_(input_ids)
        graphs.attention_mask.copy_(attention_mask)
        graphs.replay_forward()
        ctx.graphs, ctx.params = graphs, params
        return graphs.logits.detach()

    @staticmethod
    def backward(ctx, grad_logits: Tensor):
        graphs = ctx.graphs
        graphs.grad_logits.copy_(grad_logits)
        graphs.replay_backward()
        for param, grad in zip(ctx.params, graphs.grads, strict=True):
            if grad is None:
                continue
            if param.grad is None:
                param.grad = grad
            elif param.grad is grad:
                raise RuntimeError(
                    "a graphed backward pass found its own gradient buffer in .grad, overwritten by this "
                    "pass; set gradients to None between steps (optimizer.zero_grad(set_to_none=True))"
                )
            else:
                param.grad += grad
        return None, None, None, None, None


class GraphedLogits:
    """A classifier's logits through graphs of its forward and backward, one pair per input shape.

    Call it as the model in a training step: the logits it returns backpropagate into the model's
    trainable parameters' ``.grad`` like the model's own. The model must be in training mode, and
    evaluation must call the model itself: a graph replays the dropout of the mode it was captured
    in. A backward pass hands the graph's own gradient buffers to ``.grad``, which the next replay
    overwrites: set gradients to ``None`` after each optimizer step, as ``zero_grad`` does by default.

    Args:
        model: The classifier, on the GPU, in training mode.
        capture: Captures one shape; tests pass one that runs eagerly, without a GPU.

    Example:
        >>> logits_of = GraphedLogits(model)  # doctest: +SKIP
        >>> loss = F.cross_entropy(logits_of(batch["input_ids"], batch["attention_mask"]), labels)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, capture: Capture = CudaShapeGraphs) -> None:
        self._model = model
        self._params = [param for param in model.parameters() if param.requires_grad]
        self._capture = capture
        self._graphs: dict[tuple[int, ...], ShapeGraphs] = {}
        self._anchor = torch.empty(0, device=self._params[0].device, requires_grad=True)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes captured so far, in capture order."""
        return list(self._graphs)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        shape = tuple(input_ids.shape)
        graphs = self._graphs.get(shape)
        if graphs is None:
            # The first capture of a run meets lazy set-up work: it warms up twice, later ones once.
            warmup_passes = 1 if self._graphs else 2
            graphs = self._capture(self._model, self._params, (input_ids, attention_mask), warmup_passes)
            self._graphs[shape] = graphs
        return _Replay.apply(graphs, self._params, input_ids, attention_mask, self._anchor)


def eager_logits(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``model``'s logits, computed op by op: the CPU path, and the GPU one with graphs turned off."""

    def logits_of(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return _logits(model, input_ids, attention_mask)

    return logits_of

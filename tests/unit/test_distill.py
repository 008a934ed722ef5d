"""Distillation: a student made of teacher layers, the KL loss, and short teacher → student runs."""

import pytest
import torch

from tests.conftest import tiny_run_config
from tests.unit.test_textclass import tc_config
from trainforge.errors import ConfigError


def test_keep_layers_copies_the_chosen_layers():
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainforge.tasks.distill.student import keep_layers

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    student = keep_layers(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert student.model.layers[1].self_attn.layer_idx == 1
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    per_layer = sum(p.numel() for p in teacher.model.layers[0].parameters())
    assert n(teacher) - n(student) == 2 * per_layer
    out = student.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)  # the KV cache fits
    assert out.shape == (1, 6)
    with pytest.raises(ConfigError, match="the teacher has 4 layers"):
        keep_layers(teacher, [0, 4])


def test_kl_is_zero_for_equal_logits_and_masks_positions():
    from trainforge.methods.distillation import distillation_kl

    logits = torch.randn(2, 5, 7)
    assert distillation_kl(logits, logits.clone(), 2.0).item() == pytest.approx(0, abs=1e-6)
    other = logits.clone()
    other[:, 0] += torch.randn(2, 7) * 5
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 0] = False
    assert distillation_kl(logits, other, 2.0, mask).item() == pytest.approx(0, abs=1e-6)
    assert distillation_kl(logits, other, 2.0).item() > 0.1


def test_distill_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="needs `distill.teacher`"):
        tiny_run_config(tmp_path, distill={"alpha": 0.3})
    with pytest.raises(ConfigError, match="set `method.name: full`"):
        tiny_run_config(tmp_path, distill={"teacher": "tiny-llama", "student_layers": [0]})
    with pytest.raises(ConfigError, match="distinct layer indexes"):
        tiny_run_config(tmp_path, method={"name": "full"}, distill={"teacher": "tiny-llama", "student_layers": [0, 0]})
    with pytest.raises(ConfigError, match="is for task lm"):
        tc_config(tmp_path, method={"name": "full"}, distill={"teacher": "x", "mode": "sequence"})


def _kl_fell(run):
    kl = [m["kl_loss"] for m in run.metrics() if "kl_loss" in m]
    assert len(kl) >= 3
    assert sum(kl[-2:]) / 2 < kl[0]
    return kl


def test_textcls_student_from_teacher_layers_learns_from_the_teacher(tmp_path):
    from trainforge.pipeline import train
    from trainforge.tracking.rundir import read_json

    runs = tmp_path / "runs"
    training = {
        "max_steps": 30,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "max_length": 40,
        "logging_steps": 4,
        "save_steps": 30,
        "lr_scheduler": "linear",
    }
    data = {"task": "support-tickets", "task_size": 256, "split": {"train": 0.75, "validation": 0.125, "test": 0.125}}
    teacher = train(
        tc_config(runs, name="teacher", method={"name": "full"}, training={**training, "max_steps": 80}, data=data)
    )
    teacher_acc = read_json(teacher.file("summary.json"))["after.accuracy"]
    run = train(
        tc_config(
            runs,
            name="student",
            method={"name": "full"},
            training=training,
            data=data,
            distill={"teacher": "teacher", "student_layers": [1], "alpha": 0.9, "temperature": 2.0},
        )
    )
    summary = read_json(run.file("summary.json"))
    _kl_fell(run)
    assert summary["student.params"] < summary["teacher.params"]
    assert summary["student.size_mb"] < summary["teacher.size_mb"]
    assert summary["teacher.accuracy"] == pytest.approx(teacher_acc)
    assert summary["after.accuracy"] >= teacher_acc - 0.15  # the stated gap: within 15 accuracy points of the teacher
    from trainforge.tasks.text_classification.task import evaluate as evaluate_classifier_run

    assert evaluate_classifier_run(run)["accuracy"] == pytest.approx(
        summary["after.accuracy"]
    )  # the student loads as a run


@pytest.mark.parametrize("mode", ["logits", "sequence"])
def test_lm_student_from_teacher_layers(tmp_path, mode):
    import json

    from trainforge.inference import load_run_model
    from trainforge.pipeline import train
    from trainforge.tracking.rundir import read_json

    cfg = tiny_run_config(
        tmp_path / "runs",
        method={"name": "full"},
        training={"max_steps": 10, "learning_rate": 3e-3, "logging_steps": 2, "save_steps": 10},
        distill={"teacher": "tiny-llama", "student_layers": [1], "mode": mode, "alpha": 1.0},
    )
    run = train(cfg)
    summary = read_json(run.file("summary.json"))
    assert summary["teacher.teacher_kl"] == pytest.approx(0, abs=1e-5)
    if mode == "logits":
        _kl_fell(run)
        assert summary["after.teacher_kl"] < summary["before.teacher_kl"]  # held out, not only the training KL
    else:
        rows = [json.loads(line) for line in run.file("distill_data.jsonl").read_text().splitlines()]
        assert rows and all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert summary["student.params"] < summary["teacher.params"]
    assert {"teacher.perplexity", "student.perplexity", "teacher.tokens_per_second", "after.exact_match"} <= set(
        summary
    )
    model, _ = load_run_model(run)
    assert model.config.num_hidden_layers == 1

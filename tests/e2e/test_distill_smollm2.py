"""End-to-end on the real bundled SmolLM2-135M-Instruct: the 30-layer teacher → a 10-layer student made of every
third of its layers, logit distillation on the answer tokens of the dates-json task. The student's held-out KL to the
teacher and its held-out perplexity fall from their initial values, and the same student trained on the hard labels
only (alpha 0: same code path, steps, rows, seed) is the baseline it is compared with."""

import pytest

from conftest import tiny_run_config
from test_textclass_minilm import _summary
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e

STUDENT_LAYERS = [0, 3, 6, 9, 12, 15, 18, 21, 24, 29]


def student(runs_dir, name, alpha):
    config = tiny_run_config(
        runs_dir, name=name, model={"name": "smollm2-135m-instruct"}, method={"name": "full"},
        data={"task_size": 96},  # 72 training rows, 12 held out
        distill={"teacher": "smollm2-135m-instruct", "student_layers": STUDENT_LAYERS, "temperature": 2.0,
                 "alpha": alpha},
        training={"max_steps": 8, "batch_size": 2, "learning_rate": 3e-4, "max_length": 128, "logging_steps": 2,
                  "save_steps": 1000, "lr_scheduler": "linear", "precision": "fp32"},
        evaluation={"generation": False, "batch_size": 12},
    )
    return _summary(train(config))


def test_smollm2_distilled_student_moves_towards_the_teacher(runs_dir):
    distilled = student(runs_dir, "distilled", alpha=0.5)
    hard = student(runs_dir, "hard-labels", alpha=0.0)
    for label, s in (("distilled", distilled), ("hard labels", hard)):
        print(f"{label}: held-out KL to teacher {s['before.teacher_kl']:.3f} → {s['after.teacher_kl']:.3f}, "
              f"perplexity {s['before.perplexity']:.2f} → {s['after.perplexity']:.2f} "
              f"(teacher {s['teacher.perplexity']:.2f}), {s['train_seconds']} s")
    print({k: v for k, v in distilled.items() if k.startswith(("teacher.", "student."))})
    assert distilled["after.teacher_kl"] < 0.5 * distilled["before.teacher_kl"], distilled
    assert distilled["after.perplexity"] < distilled["before.perplexity"], distilled
    assert distilled["last_kl_loss"] < distilled["first_kl_loss"], distilled
    assert distilled["after.teacher_kl"] < hard["after.teacher_kl"], (distilled, hard)
    assert distilled["student.params"] < 0.7 * distilled["teacher.params"]

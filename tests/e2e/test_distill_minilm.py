"""End-to-end on the real bundled all-MiniLM-L6-v2: a fine-tuned 6-layer teacher → a 2-layer student made of its
layers 0 and 5. The distilled student stays within a stated gap of the teacher's accuracy, and the summary compares
teacher and student (parameters, size on disk, rows/s, accuracy). The same student trained on the hard labels only
(alpha 0: same code path, steps, rows, seed) is the baseline. Measured (200 held-out rows, seeds 42 / 7 / 1):
distilled 0.98 / 0.975 / 0.99, hard labels 0.985 / 0.975 / 0.985 (teacher 1.0). On these templated tickets the
teacher's soft targets add nothing the labels lack (T=1 / alpha 0.5 and T=4 / alpha 1 did not win either), so the test
asserts a draw within DRAW rather than a win the data do not show."""

import pytest

from conftest import merge
from test_textclass_minilm import _summary
from test_textclass_minilm import minilm_config as textclass_config
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e

GAP = 0.05  # the distilled student's accuracy is at most this far below the teacher's (measured: 0.01-0.025)
DRAW = 0.02  # distilled vs hard-label student: |difference| at most 4 of the 200 held-out rows (measured: ≤ 0.005)
STUDENT_LAYERS = [0, 5]
STUDENT_STEPS = 8  # short: at 20 steps both students reach the teacher, the comparison says nothing


def minilm_config(runs_dir, name, **sections):
    """The text-classification e2e config, as a full fine-tune on a smaller, harder split (fewer training rows)."""
    return textclass_config(
        runs_dir,
        **merge(
            {
                "name": name,
                "data": {"task_size": 400, "split": {"train": 0.4, "validation": 0.1, "test": 0.5}},
                "method": {"name": "full"},
                "training": {"epochs": 3, "learning_rate": 3e-4},
            },
            sections,
        ),
    )


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    """One fine-tuned teacher for the whole module: confident (validation loss ~0.1), as soft targets from an
    under-trained teacher (1e-4, loss ~0.95) are near uniform at T=2 and slowed the student down."""
    runs_dir = tmp_path_factory.mktemp("distill") / "runs"
    train(minilm_config(runs_dir, "teacher"))
    return runs_dir


def student(runs_dir, name, alpha):
    """The 2-layer student; alpha 0 trains on the hard labels only, through the same code path and budget."""
    config = minilm_config(
        runs_dir,
        name,
        distill={"teacher": "teacher", "student_layers": STUDENT_LAYERS, "temperature": 2.0, "alpha": alpha},
        training={"max_steps": STUDENT_STEPS},
    )
    return _summary(train(config))


def test_distilled_student_near_teacher_and_level_with_hard_label_student(teacher_runs):
    distilled = student(teacher_runs, "distilled", alpha=0.7)
    hard = student(teacher_runs, "hard-labels", alpha=0.0)
    teacher_acc, student_acc, hard_acc = (
        distilled["teacher.accuracy"],
        distilled["student.accuracy"],
        hard["student.accuracy"],
    )
    print(
        f"accuracy: teacher {teacher_acc:.3f}, distilled student {student_acc:.3f} "
        f"(from {distilled['before.accuracy']:.3f}), hard-label student {hard_acc:.3f}"
    )
    print({k: v for k, v in distilled.items() if k.startswith(("teacher.", "student."))})
    assert teacher_acc >= 0.9, distilled
    assert student_acc >= teacher_acc - GAP, distilled
    assert hard_acc >= teacher_acc - GAP, hard
    assert abs(student_acc - hard_acc) <= DRAW, (distilled, hard)
    assert distilled["last_kl_loss"] < distilled["first_kl_loss"], distilled
    # the report's side-by-side: a third of the encoder layers (the 12M-parameter embeddings stay). Rows/s is printed,
    # not asserted: on a shared CPU it swings 2x between runs.
    assert distilled["student.params"] < 0.7 * distilled["teacher.params"]
    assert distilled["student.size_mb"] < 0.7 * distilled["teacher.size_mb"]

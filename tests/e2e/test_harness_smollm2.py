"""lm-evaluation-harness on the bundled SmolLM2-135M-Instruct: its accuracy on `basics` is trainforge's own."""

import pytest

from trainforge.evaluation.benchmark import benchmark_source
from trainforge.evaluation.harness import harness_source
from trainforge.evaluation.sources import load_source

pytestmark = pytest.mark.e2e


def test_harness_accuracy_on_basics_is_the_benchmarks(tmp_path):
    # measured on all 100 questions (seed 0, 0-shot): 0.33 both, in 145 s of CPU (harness) and 240 s (benchmark);
    # 10 per subject here keeps the test short. The requests themselves are compared in tests/unit/test_harness.py.
    model = load_source("smollm2-135m-instruct")
    own, _ = benchmark_source(model, "basics", per_subject=10, out=str(tmp_path / "own.json"))
    done = harness_source(model, "basics", per_subject=10, out=str(tmp_path / "harness.json"))
    assert own["questions"] == 40
    assert abs(done["scores"]["harness.basics.acc"] - own["accuracy"]) <= 1 / 40 + 1e-9  # within one question

"""The benchmark runner and the judge on the bundled SmolLM2-135M-Instruct."""

import pytest

from trainforge.evaluation.benchmark import benchmark_source
from trainforge.evaluation.sources import load_source

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smollm2():
    return load_source("smollm2-135m-instruct")


def test_smollm2_beats_chance_on_the_bundled_benchmark(smollm2, tmp_path):
    # measured here (seed 0, 25 per subject, 0-shot): overall 0.33, capitals 0.64, chance 0.25
    results, _ = benchmark_source(smollm2, "basics", out=str(tmp_path / "r.json"))
    assert results["questions"] == 100 and results["chance"] == 0.25
    assert results["accuracy"] >= 0.30
    assert results["subjects"]["capitals"]["accuracy"] >= 0.5  # 25 questions: chance would pass this < 0.1% of the time

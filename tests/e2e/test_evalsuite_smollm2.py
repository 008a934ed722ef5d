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


def test_smollm2_judge_never_hands_a_win_to_gibberish(tmp_path):
    from pathlib import Path

    from trainforge.evaluation.judge import judge_sources

    prompts = Path(__file__).parents[2] / "examples" / "data" / "judge-prompts.jsonl"
    results, _ = judge_sources(
        "smollm2-135m-instruct", "tiny-llama", str(prompts), max_new_tokens=48, out=str(tmp_path / "j.json")
    )
    # measured: the 135M judge says "A" whatever comes first (first_position_rate 1.0), so every strict verdict is a
    # tie; with the bias averaged out it prefers SmolLM2's answer over the random model's on 7 of 8 prompts
    assert results["loss_rate"] == 0.0 and results["prompts"] == 8
    assert results["debiased_win_rate"] >= 0.75

"""The benchmark harness's MFU ceiling: it must record exactly one step's matmuls and count their FLOPs right."""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import sft_vs_trl as harness  # noqa: E402


def test_the_ceiling_records_one_steps_matmuls_and_counts_their_flops():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    recorder = harness._matmul_recorder(step=2)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0)

    def optimizer_step(rows: int) -> None:
        recorder.on_step_begin(None, state, None)
        state.num_input_tokens_seen += rows  # as the Trainer counts a step's tokens, after on_step_begin
        model(torch.randn(rows, 8)).sum().backward()
        state.global_step += 1
        recorder.on_step_end(None, state, None)

    for rows in (5, 7, 3):  # only the second step is recorded
        optimizer_step(rows)

    assert recorder.tokens == 7
    assert sum(recorder.calls.values()) == 5  # 2 forward (addmm), 2 weight gradients, 1 input gradient
    ceiling = harness.matmul_ceiling(recorder.calls, model_flops=1e6, rounds=2)
    first, second = 2 * 7 * 8 * 16, 2 * 7 * 16 * 4
    assert ceiling["matmul_gflop"] * 1e9 == 2 * first + 3 * second  # the first layer's input needs no gradient
    assert ceiling["matmul_calls"] == 5 and ceiling["matmul_alone_s"] > 0 and ceiling[f"{harness.REFERENCE}_peak"] > 0


def test_sampling_the_peak_during_training_leaves_the_runs_random_numbers_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    harness.matmul_peak("bf16", n=64, seconds=0.01)
    torch.set_num_threads(threads)
    assert torch.equal(torch.rand(4), expected)

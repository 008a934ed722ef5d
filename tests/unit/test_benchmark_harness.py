"""The benchmark harness: its MFU ceiling must record exactly one step's matmuls and count their FLOPs right, and
its held-out scores must score the answer tokens alone, the same way for both sides."""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainforge.models.registry import resolve_model

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import sft_vs_trl as harness


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


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_the_ceiling_times_the_recorded_matmuls_on_their_device(device):
    model = torch.nn.Linear(64, 32).to(device)
    recorder = harness._matmul_recorder(step=1)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0)
    recorder.on_step_begin(None, state, None)
    state.num_input_tokens_seen += 16
    model(torch.randn(16, 64, device=device)).sum().backward()
    state.global_step += 1
    recorder.on_step_end(None, state, None)
    devices = {spec[3].type for _, specs, _ in recorder.calls for spec in specs if isinstance(spec, tuple)}
    assert devices == {device}
    ceiling = harness.matmul_ceiling(recorder.calls, model_flops=1e6, rounds=2)
    # forward and the weight's gradient (the input needs none)
    assert ceiling["matmul_gflop"] * 1e9 == 2 * 2 * 16 * 64 * 32 and ceiling[f"{harness.REFERENCE}_peak"] > 0


def test_the_gpu_memory_peak_leaves_the_in_row_peak_samples_out(monkeypatch):
    """The probe samples the matmul peak after each step; on a GPU its operands (3 × 8192² in bf16) can outweigh
    a small model's whole step. A CUDA allocator stand-in: the weights, two steps' transient activations, and
    samples larger than either."""
    mb = 2**20
    held = {"now": 0, "peak": 0}

    def allocate(nbytes: int) -> None:
        held["now"] += nbytes
        held["peak"] = max(held["peak"], held["now"])

    def sample(dtype_name: str, seconds: float) -> float:
        allocate(1024 * mb)
        allocate(-1024 * mb)
        return 1e15

    monkeypatch.setattr(harness, "DEVICE", "cuda")
    monkeypatch.setattr(harness, "matmul_peak", sample)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: held["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: held.update(peak=held["now"]))
    probe = harness._probe()
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, log_history=[])
    allocate(100 * mb)  # the weights
    probe.on_train_begin(None, state, None)
    for activations in (500, 300):
        allocate(activations * mb)
        allocate(-activations * mb)
        probe.on_step_end(None, state, None)
    probe.on_train_end(None, state, None, model=torch.nn.Linear(2, 2))
    assert probe.gpu_peak == 600 * mb


def test_sampling_the_peak_during_training_leaves_the_runs_random_numbers_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    harness.matmul_peak("bf16", n=64, seconds=0.01)
    torch.set_num_threads(threads)
    assert torch.equal(torch.rand(4), expected)


@pytest.fixture
def fresh_adapter(tmp_path):
    """A LoRA adapter as peft initializes it (B = 0) on the tiny LLaMA: the policy equals the base model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"))
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(tmp_path)
    return tmp_path


def test_held_out_dpo_scores_of_an_unchanged_policy_are_a_coin_toss(fresh_adapter, monkeypatch):
    monkeypatch.setitem(harness.HELDOUT_ROWS, "dpo", 3)
    scores = harness.heldout_scores("dpo", fresh_adapter, model_name="tiny-llama")
    # every margin is 0: the loss is -log σ(0) = ln 2 and no pair counts as won
    assert scores == {"heldout_dpo_loss": round(math.log(2), 4), "heldout_preference_accuracy": 0.0}


def test_held_out_sft_loss_scores_exactly_the_answer_tokens(fresh_adapter, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainforge.data.tasks import generate_task

    monkeypatch.setitem(harness.HELDOUT_ROWS, "sft", 1)
    [row] = generate_task(harness.HELDOUT["sft"], 1, harness.HELDOUT_SEED)[1]
    path = resolve_model("tiny-llama")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    # the library's own loss over the whole conversation with the prompt's labels masked out
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
    whole = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    ids = tokenizer(whole, add_special_tokens=False, return_tensors="pt").input_ids
    labels = ids.clone()
    labels[0, : len(tokenizer(prompt, add_special_tokens=False).input_ids)] = -100
    with torch.inference_mode():
        expected = model(input_ids=ids, labels=labels).loss.item()
    assert harness.heldout_scores("sft", fresh_adapter, model_name="tiny-llama")["heldout_loss"] == pytest.approx(
        expected, abs=1e-4
    )

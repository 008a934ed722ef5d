"""Prompts run once (methods.shared_prefix). DPO: the shared-prompt forward returns what TRL's fused LM head returns
for the batch's two rows per pair, gradients included, and runs the backbone on fewer tokens; ORPO trains as with
TRL's own forward. SFT: a batch's common first tokens run once and the chunked loss and its gradients stay those of
the plain forward."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head

from conftest import tiny_run_config
from trainforge.methods.shared_prefix import (
    chunked_causal_lm_loss,
    common_start,
    pair_layout,
    share_pair_prefixes,
    shared_start_hidden,
    usable,
)
from trainforge.models.registry import resolve_model
from trainforge.pipeline import train

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
# a plain pair; answers sharing their first tokens; a chosen answer that is a prefix of the rejected one; a pair cut
# by max_length inside the rejected answer; a one-token prompt
PAIRS = [
    {"prompt_ids": [5, 6, 7, 8, 9, 10], "chosen_ids": [11, 12, 13], "rejected_ids": [14, 15]},
    {"prompt_ids": [21, 22, 23], "chosen_ids": [30, 31, 32, 33], "rejected_ids": [30, 31, 40, 41, 42]},
    {"prompt_ids": [51, 52, 53, 54], "chosen_ids": [60, 61], "rejected_ids": [60, 61, 62]},
    {"prompt_ids": [71, 72, 73, 74, 75, 76, 77], "chosen_ids": [80], "rejected_ids": [81, 82, 83, 84, 85, 86]},
    {"prompt_ids": [91], "chosen_ids": [92, 93], "rejected_ids": [94]},
]


def _lora_model(attention: str):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"), attn_implementation=attention)
    add_fused_lm_head(model, outputs=FIELDS)
    # nonzero B: the adapter changes the outputs, so its gradients are compared too
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))


def _forward(model, batch):
    model.zero_grad()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True)
    out.log_probs.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return {f: getattr(out, f).detach() for f in FIELDS} | {"loss": out.loss.detach()}, grads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_shared_prompt_forward_equals_the_two_row_forward_with_its_gradients(attention):
    batch = DataCollatorForPreference(pad_token_id=0, max_length=12)(PAIRS)
    model = _lora_model(attention)
    assert usable(model)
    expected, expected_grads = _forward(model, batch)
    share_pair_prefixes(model)
    got, grads = _forward(model, batch)
    for field, value in expected.items():
        torch.testing.assert_close(got[field], value, atol=2e-5, rtol=1e-4, msg=field)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert expected["log_probs"].ne(0).sum() >= 20  # the comparison covers real answer tokens


def test_the_backbone_sees_each_prompt_once():
    batch = DataCollatorForPreference(pad_token_id=0)(PAIRS)
    layout = pair_layout(batch["input_ids"], batch["attention_mask"])
    two_rows = int(batch["attention_mask"].sum())
    prompts = sum(len(p["prompt_ids"]) for p in PAIRS)
    shared_answer_starts = 2 + 2  # pair 2 shares `30 31`, pair 3 `60 61`
    assert int((layout.part != 3).sum()) == two_rows - prompts - shared_answer_starts
    assert layout.input_ids.size(0) == len(PAIRS) and layout.input_ids.size(1) < batch["input_ids"].size(1) * 2


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_with_a_shared_prompt_trains_like_the_two_row_forward(runs_dir, method, monkeypatch):
    """The same DPO run with and without the shared prompt: the same losses step by step (up to float rounding).
    Full fine-tuning precomputes the reference log-probs while the trainer is built: that pass shares too."""
    from trainforge.methods import shared_prefix

    layouts_without_grad = []
    real_layout = shared_prefix.pair_layout
    monkeypatch.setattr(
        shared_prefix,
        "pair_layout",
        lambda *a: layouts_without_grad.append(not torch.is_grad_enabled()) or real_layout(*a),
    )

    def run(name, shared):
        config = tiny_run_config(
            runs_dir,
            name=name,
            data={"task": "constrained-answers", "format": "preference", "task_size": 48},
            method={"name": method},
            training={
                "objective": "dpo",
                "max_steps": 6,
                "max_length": 96,
                "learning_rate": 5e-3,
                "shared_prompt": shared,
                "precision": "fp32",
                "logging_steps": 1,
            },
            evaluation={"before_after": False, "generation": False},
        )
        return [m["loss"] for m in train(config).metrics() if "loss" in m]

    shared, two_rows = run("shared", True), run("two-rows", False)
    assert len(shared) == 6 and shared == pytest.approx(two_rows, rel=1e-3, abs=1e-4)
    assert shared[-1] < shared[0]
    assert layouts_without_grad.count(False) == 6  # the policy forward of each training step
    # without gradient: LoRA's reference (the adapter disabled) each step; full fine-tuning's reference log-probs of
    # all 36 training pairs, 4 a batch, precomputed while the trainer is built
    assert layouts_without_grad.count(True) >= (6 if method == "lora" else 36 // 4)


def test_orpo_with_a_shared_prompt_trains_like_trls_forward(runs_dir, monkeypatch):
    """The same ORPO run with the shared prompt and with TRL's two-row forward: the same losses, NLL terms, log-probs
    and odds ratios step by step (up to float rounding), each step's policy forward sharing."""
    from trainforge.methods import shared_prefix

    layouts = []
    real_layout = shared_prefix.pair_layout
    monkeypatch.setattr(
        shared_prefix, "pair_layout", lambda *a: layouts.append(torch.is_grad_enabled()) or real_layout(*a)
    )
    compared = (
        "loss",
        "nll_loss",
        "logps/chosen",
        "logps/rejected",
        "log_odds_ratio",
        "rewards/margins",
        "num_input_tokens_seen",
    )

    def run(name, shared):
        config = tiny_run_config(
            runs_dir,
            name=name,
            data={"task": "constrained-answers", "format": "preference", "task_size": 48},
            training={
                "objective": "orpo",
                "beta": 1.0,
                "max_steps": 6,
                "max_length": 96,
                "learning_rate": 5e-3,
                "shared_prompt": shared,
                "precision": "fp32",
                "logging_steps": 1,
            },
            evaluation={"before_after": False, "generation": False},
        )
        logged = [m for m in train(config).metrics() if "loss" in m]
        return {k: [m[k] for m in logged] for k in compared}

    shared, two_rows = run("shared", True), run("two-rows", False)
    assert layouts.count(True) == 6  # each training step's forward (and the validation split's, without gradient)
    for key in compared:
        assert len(shared[key]) == 6 and shared[key] == pytest.approx(two_rows[key], rel=1e-3, abs=1e-4), key
    assert shared["loss"][-1] < shared["loss"][0]
    # the trained tokens: both rows of 4 pairs a step, without padding
    steps = [b - a for a, b in zip([0, *shared["num_input_tokens_seen"]], shared["num_input_tokens_seen"])]
    assert all(2 * 4 * 10 < n < 2 * 4 * 96 for n in steps), steps


def _sft_batch():
    """Right-padded rows with 10 common first tokens; labels from the last common position on (its hidden state
    scores each row's first own token) up to each row's end."""
    start = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]
    rests = [[46, 26, 43], [38, 32, 79, 50, 28, 84, 19], [71, 69], [39, 93, 75, 10, 58]]
    width = len(start) + max(map(len, rests))
    input_ids = torch.zeros(len(rests), width, dtype=torch.long)
    attention_mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, -100)
    for i, rest in enumerate(rests):
        row = start + rest
        input_ids[i, : len(row)], attention_mask[i, : len(row)] = torch.tensor(row), 1
        labels[i, len(start) - 1 : len(row)] = input_ids[i, len(start) - 1 : len(row)]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.mark.parametrize("attention,checkpointing", [("eager", None), ("sdpa", None), ("eager", 1), ("sdpa", 2)])
def test_sft_shared_start_gives_the_plain_loss_and_gradients(attention, checkpointing):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"), attn_implementation=attention)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).train()
    if checkpointing:  # layers replayed in backward must see the same cached start
        model.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=checkpointing)
    batch = _sft_batch()
    assert shared_start_hidden(base, {k: batch[k] for k in ("input_ids", "attention_mask")}) is not None

    def loss_and_grads(share):
        model.zero_grad()
        loss = chunked_causal_lm_loss(model, batch, share_start=share)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_loss, plain_grads = loss_and_grads(False)
    shared_loss, shared_grads = loss_and_grads(True)
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-5, rtol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in plain_grads.values())


def test_common_start_leaves_each_row_a_token_and_odd_batches_run_plainly():
    batch = _sft_batch()
    assert common_start(batch["input_ids"], batch["attention_mask"]) == 10
    same = batch["input_ids"][:1, :10].repeat(2, 1)
    assert common_start(same, torch.ones_like(same)) == 9
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-llama"))
    features = {k: batch[k] for k in ("input_ids", "attention_mask")}
    left_padded = {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"].flip(1)}
    assert shared_start_hidden(base, left_padded) is None
    assert shared_start_hidden(base, {**features, "position_ids": torch.arange(13)[None]}) is None


def test_sft_with_a_shared_start_trains_like_the_plain_forward(runs_dir):
    """The same SFT run (the dates task's rows share the chat template's system prompt and the instruction) with
    and without the shared start: the same losses step by step."""

    def run(name, shared):
        config = tiny_run_config(
            runs_dir,
            name=name,
            training={"shared_prompt": shared, "precision": "fp32", "max_steps": 6},
            evaluation={"before_after": False, "generation": False},
        )
        return [m["loss"] for m in train(config).metrics() if "loss" in m]

    shared, plain = run("shared", True), run("plain", False)
    assert len(shared) == 6 and shared == pytest.approx(plain, rel=1e-4, abs=1e-5)
    assert shared[-1] < shared[0]

"""DPO's shared-prompt forward (methods.shared_prefix) returns what TRL's fused LM head returns for the batch's two
rows per pair, gradients included, and runs the backbone on fewer tokens."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head

from conftest import tiny_run_config
from trainforge.methods.shared_prefix import pair_layout, share_pair_prefixes, usable
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


def test_dpo_with_a_shared_prompt_trains_like_the_two_row_forward(runs_dir):
    """The same DPO run with and without the shared prompt: the same losses step by step (up to float rounding)."""
    def run(name, shared):
        config = tiny_run_config(runs_dir, name=name, data={"task": "constrained-answers", "format": "preference",
                                                           "task_size": 48},
                                 training={"objective": "dpo", "max_steps": 6, "max_length": 96, "learning_rate": 5e-3,
                                           "shared_prompt": shared, "precision": "fp32", "logging_steps": 1},
                                 evaluation={"before_after": False, "generation": False})
        return [m["loss"] for m in train(config).metrics() if "loss" in m]

    shared, two_rows = run("shared", True), run("two-rows", False)
    assert len(shared) == 6 and shared == pytest.approx(two_rows, rel=1e-3, abs=1e-4)
    assert shared[-1] < shared[0]


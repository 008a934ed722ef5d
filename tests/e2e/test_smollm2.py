"""End-to-end on the real bundled SmolLM2-135M-Instruct: a short LoRA SFT whose loss falls and whose adapter
reproduces the run's logits when loaded with plain peft."""

import pytest
import torch

from conftest import tiny_run_config, train_losses
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e


def test_smollm2_lora_sft_loss_falls_and_adapter_reloads(runs_dir):
    from peft import PeftModel

    from trainforge.data.tokenize import render
    from trainforge.inference import load_run_model
    from trainforge.models import load_causal_lm, load_tokenizer

    config = tiny_run_config(
        runs_dir,
        model={"name": "smollm2-135m-instruct"},
        data={"task_size": 120},
        method={"lora": {"r": 8, "alpha": 16}},
        training={"max_steps": 12, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "save_steps": 100},
        evaluation={"max_samples": 8, "max_new_tokens": 20, "generation": True, "before_after": False},
    )
    run = train(config)
    losses = train_losses(run)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    text = render(
        tokenizer, [{"role": "user", "content": "Extract the date: born on May 3, 1999."}], add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        plain = (
            PeftModel.from_pretrained(load_causal_lm("smollm2-135m-instruct"), run.path / "adapter").eval()(ids).logits
        )
        ours = load_run_model(run)[0](ids).logits
    assert torch.equal(plain, ours)

"""End-to-end on the real bundled SmolLM2-135M-Instruct: a short PiSSA SFT (the adapter starts from every projection's
principal singular directions, the base keeps the residual) whose loss falls and whose saved adapter, converted by
peft to a plain LoRA, gives the trained model's logits on the untouched SmolLM2 in plain peft."""

import json

import pytest
import torch
from transformers import TrainerCallback

from conftest import tiny_run_config, train_losses
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e


class EndLogits(TrainerCallback):
    def __init__(self, ids):
        self.ids = ids

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=self.ids).logits.float()


def test_smollm2_pissa_sft_adapter_loads_on_the_original_base(runs_dir):
    from peft import PeftModel

    from trainforge.models import load_causal_lm, load_tokenizer

    ids = load_tokenizer("smollm2-135m-instruct")("Extract the date: born on May 3, 1999.", return_tensors="pt")
    watch = EndLogits(ids["input_ids"])
    config = tiny_run_config(
        runs_dir,
        model={"name": "smollm2-135m-instruct"},
        data={"task_size": 80},
        # q / v only: a full SVD of each of the 210 projections alone takes minutes on a CPU
        method={"lora": {"r": 8, "alpha": 8, "init": "pissa", "target_modules": ["q_proj", "v_proj"]}},
        training={"max_steps": 6, "batch_size": 4, "learning_rate": 2e-4, "max_length": 128, "precision": "fp32"},
        evaluation={"before_after": False, "generation": False, "perplexity": False},
    )
    run = train(config, callbacks=[watch])
    losses = train_losses(run)
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses

    assert json.loads((run.path / "adapter" / "adapter_config.json").read_text())["r"] == 16  # converted: 2r
    with torch.no_grad():
        plain = PeftModel.from_pretrained(load_causal_lm("smollm2-135m-instruct"), run.path / "adapter").eval()
        diff = (plain(**ids).logits - watch.logits).abs().max().item()
    assert diff < 1e-3, diff

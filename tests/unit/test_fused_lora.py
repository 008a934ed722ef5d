"""The fused LoRA forward (scales folded into one addmm) gives peft's outputs and gradients, with the same dropout
masks, and leaves every case it does not fuse to peft."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from trainforge.methods.fused_lora import FusedLoraLinear, use_fused_lora
from trainforge.methods.mask_dropout import use_mask_dropout


def _pair(dropout: float):
    """peft's LoRA model and a fused copy, with B nonzero so the adapter's product counts."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    use_mask_dropout(model)
    fused = copy.deepcopy(model)
    use_fused_lora(fused)
    return model.train(), fused.train()


def _step(model, ids, seed: int, autocast: bool):
    torch.manual_seed(seed)  # the same dropout masks on both sides
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    logits.float().square().mean().backward()
    return logits.detach().float(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _relative_error(got, want) -> float:
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_lora_matches_peft_outputs_and_gradients(dropout):
    peft_model, fused = _pair(dropout)
    layers = [m for m in fused.modules() if isinstance(m, FusedLoraLinear)]
    assert len(layers) == 2 * 7  # every adapted projection of both layers
    ids = torch.randint(0, 97, (3, 9))
    want, want_grads = _step(peft_model, ids, 5, autocast=False)
    got, got_grads = _step(fused, ids, 5, autocast=False)
    assert torch.allclose(got, want, atol=1e-5)
    assert want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-6, rtol=1e-4), name
    if dropout:  # the masks count: another seed gives other outputs
        assert not torch.allclose(_step(fused, ids, 6, autocast=False)[0], want, atol=1e-3)


def test_fused_lora_under_bf16_autocast_is_as_close_to_fp32_as_peft():
    """bf16 rounds the fused add once where peft rounds a product, a scale and a sum: compared with the fp32
    result, the fused outputs and gradients are about as far off as peft's own (measured: ~1% both)."""
    reference, fused = _pair(0.1)
    peft_bf16 = copy.deepcopy(reference)
    ids = torch.randint(0, 97, (3, 9))
    want, want_grads = _step(reference, ids, 5, autocast=False)
    peft_out, peft_grads = _step(peft_bf16, ids, 5, autocast=True)
    got, got_grads = _step(fused, ids, 5, autocast=True)
    assert _relative_error(got, want) <= 2 * _relative_error(peft_out, want) + 1e-3
    for name, grad in want_grads.items():
        assert _relative_error(got_grads[name], grad) <= 2 * _relative_error(peft_grads[name], grad) + 5e-3, name


def test_unfused_cases_run_peft_forward():
    peft_model, fused = _pair(0.0)
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        with fused.disable_adapter(), peft_model.disable_adapter():
            assert torch.allclose(fused(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5)
        fused.merge_adapter()
        peft_model.merge_adapter()
        assert torch.allclose(fused(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5)

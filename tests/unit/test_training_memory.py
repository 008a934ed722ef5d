import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from trainforge.methods.mask_dropout import MaskDropout, use_mask_dropout


def test_mask_dropout_drops_at_rate_p_keeps_the_mean_and_saves_only_a_bool_mask():
    x = torch.ones(200, 500, requires_grad=True)
    saved = []
    torch.manual_seed(3)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = MaskDropout(0.1)(x)
    out.sum().backward()
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003  # 100k draws: the rate within ~4 standard deviations
    assert out.mean().item() == pytest.approx(1.0, abs=0.004)
    assert torch.equal(x.grad, out.detach())  # d(x·mask·scale)/dx = mask·scale, the forward's own mask
    assert [t.dtype for t in saved] == [torch.bool]
    assert torch.equal(MaskDropout(0.1).eval()(x), x)


def test_mask_dropout_follows_torch_seed_and_draws_fresh_masks():
    x = torch.ones(64, 64)
    torch.manual_seed(7)
    first, second = MaskDropout(0.5)(x), MaskDropout(0.5)(x)
    torch.manual_seed(7)
    assert torch.equal(MaskDropout(0.5)(x), first)  # a resumed run restores torch's RNG state, so its masks repeat
    assert not torch.equal(first, second)
    agree = ((first != 0) == (second != 0)).float().mean().item()
    assert abs(agree - 0.5) < 0.05  # independent draws agree half the time at p = 0.5


def test_lora_dropout_layers_are_swapped():
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    model = get_peft_model(model, LoraConfig(r=2, lora_dropout=0.1, target_modules="all-linear"))
    use_mask_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(isinstance(m, MaskDropout) and m.p == 0.1 for m in dropouts)


def test_large_allocations_are_mapped_on_glibc():
    import platform

    from trainforge.hardware import mmap_large_allocations

    if platform.libc_ver()[0] == "glibc":
        assert mmap_large_allocations()

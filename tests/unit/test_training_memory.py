import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from trainforge.methods.mask_dropout import MaskDropout, use_mask_dropout


def test_same_outputs_and_gradients_as_torch_dropout_with_a_bool_mask_saved():
    x = torch.randn(4, 8, 32, requires_grad=True)
    torch.manual_seed(3)
    expected = torch.nn.Dropout(0.1)(x)
    expected.sum().backward()
    expected_grad, x.grad = x.grad.clone(), None
    saved = []
    torch.manual_seed(3)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = MaskDropout(0.1)(x)
    out.sum().backward()
    assert torch.equal(out, expected) and torch.equal(x.grad, expected_grad)
    assert [t.dtype for t in saved] == [torch.bool]
    assert torch.equal(MaskDropout(0.1).eval()(x), x)


def test_lora_dropout_layers_are_swapped():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    model = get_peft_model(model, LoraConfig(r=2, lora_dropout=0.1, target_modules="all-linear"))
    use_mask_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(isinstance(m, MaskDropout) and m.p == 0.1 for m in dropouts)


def test_large_allocations_are_mapped_on_glibc():
    import platform

    from trainforge.hardware import mmap_large_allocations

    if platform.libc_ver()[0] == "glibc":
        assert mmap_large_allocations()

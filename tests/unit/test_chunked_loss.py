"""The label-positions chunked cross-entropy equals the plain HF causal-LM loss, value and gradients."""

import pytest
import torch

from conftest import tiny_run_config, train_losses
from trainforge.methods.chunked_loss import IGNORE, label_positions_loss, supports_chunked_loss
from trainforge.methods.shared_prefix import chunked_causal_lm_loss
from trainforge.pipeline import train


def _tiny_llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config).float()


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(0, 101, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding
    labels = ids.clone()
    labels[:, :4] = IGNORE  # a prompt without loss
    labels[mask == 0] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_and_gradients_equal_the_plain_hf_loss(tied, num_items):
    model, batch = _tiny_llama(tied), _batch()
    kwargs = {"num_items_in_batch": num_items} if num_items else {}
    plain = model(**batch, use_cache=False, **kwargs).loss
    plain.backward()
    expected = _grads(model)
    model.zero_grad()
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    chunked = label_positions_loss(hidden, model.lm_head, batch["labels"], num_items, chunk_size=5)  # several chunks
    chunked.backward()
    got = _grads(model)
    assert torch.allclose(chunked, plain, atol=1e-5, rtol=0)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-5, rtol=1e-5), name


def test_lora_model_is_supported_and_its_loss_matches():
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    batch = _batch()
    lora = get_peft_model(_tiny_llama(True), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert supports_chunked_loss(lora)
    assert torch.allclose(chunked_causal_lm_loss(lora, batch), lora(**batch).loss, atol=1e-5, rtol=0)
    prompt = get_peft_model(_tiny_llama(True), PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"))
    assert not supports_chunked_loss(prompt)  # its forward prepends virtual tokens


def test_a_batch_without_label_tokens_gives_zero_loss_and_gradients():
    model, batch = _tiny_llama(True), _batch()
    batch["labels"][:] = IGNORE
    loss = chunked_causal_lm_loss(model, batch)
    loss.backward()
    assert loss.item() == 0 and all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_training_curve_is_the_same_with_and_without_chunked_loss(runs_dir):
    curves, eval_losses = [], []
    for chunked in (True, False):
        config = tiny_run_config(
            runs_dir,
            name=f"chunked-{chunked}",
            evaluation={"before_after": False},
            training={"max_steps": 4, "precision": "fp32", "chunked_loss": chunked},
        )
        run = train(config)
        curves.append(train_losses(run))
        eval_losses.append([m["eval_loss"] for m in run.metrics() if "eval_loss" in m])
    assert len(curves[0]) == 4
    assert curves[0] == pytest.approx(curves[1], abs=1e-4)
    assert eval_losses[0] and eval_losses[0] == pytest.approx(eval_losses[1], abs=1e-4)  # the eval loss too


def test_bf16_tuning_closes_the_memory_mapped_weight_file(tmp_path):
    from transformers import LlamaForCausalLM

    from trainforge.methods.speedups import mapped_ranges as _mapped_ranges
    from trainforge.methods.speedups import tune_model_for_training

    _tiny_llama(True).save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    model.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tune_model_for_training(model, "auto", max_length=128, precision="bf16")
    mapped = _mapped_ranges()
    assert not any(lo <= p.untyped_storage().data_ptr() < hi for p in model.parameters() for lo, hi in mapped)
    for name, p in model.named_parameters():  # the same numbers: fp32 ones copied, linear ones cast as before
        assert torch.equal(p, before[name].to(p.dtype))


def test_tuning_for_cpu_training_stores_only_frozen_linear_weights_in_bf16():
    from peft import LoraConfig, get_peft_model

    from trainforge.methods.speedups import tune_model_for_training

    model = get_peft_model(_tiny_llama(True), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    tune_model_for_training(model, "auto", max_length=128, precision="bf16")
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # trained
    assert {d for n, d in dtypes.items() if "base_layer" in n} == {torch.bfloat16}  # frozen, cast by autocast anyway
    assert {d for n, d in dtypes.items() if "embed" in n or "norm" in n} == {torch.float32}  # residual stream, norms
    assert model.get_base_model().config._attn_implementation == "eager"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_causal_lm_loss(model, _batch())
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_bf16_tuning_casts_each_pre_norm_output_once():
    """Under autocast each linear layer casts its fp32 input to bf16, peft's LoRA path casts it to fp32 and back
    again, and fp32 rotary tables turn queries and keys to fp32 and back; the tuned model casts each pre-norm's
    output and the tables once, forward and backward, with the same loss."""
    from peft import LoraConfig, get_peft_model
    from torch.utils._python_dispatch import TorchDispatchMode

    from trainforge.methods.speedups import tune_model_for_training

    class ActivationCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].dim() >= 3:
                self.count += 1  # an activation (batch, seq, …) or its gradient changing dtype
            return func(*args, **(kwargs or {}))

    def step(model):
        with ActivationCasts() as casts:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = chunked_causal_lm_loss(model, _batch())
            loss.backward()
        return casts.count, loss.item()

    model = get_peft_model(_tiny_llama(True), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    before, loss_before = step(model)
    tune_model_for_training(model, "sdpa", max_length=128, precision="bf16")
    after, loss_after = step(model)
    layers = model.config.num_hidden_layers
    assert before >= 30 * layers and after <= 8 * layers  # here 71 → 14: the two norms and the tables, each way
    assert loss_after == pytest.approx(loss_before, rel=1e-2)


@pytest.mark.parametrize(
    "max_length, packed, expected",
    [(512, False, "eager"), (128, True, "eager"), (256, True, "sdpa"), (512, True, "sdpa")],
)
def test_auto_attention_on_cpu_follows_how_long_rows_get(max_length, packed, expected):
    """Padded rows are as long as a batch's longest example, packed rows as long as max_length: eager attention's
    T×T scores pay only for short rows."""
    from trainforge.methods.speedups import tune_model_for_training

    model = _tiny_llama(True)
    tune_model_for_training(model, "auto", max_length=max_length, precision="fp32", packed=packed)
    assert model.config._attn_implementation == expected

"""trainforge's CUDA paths, run on a GPU: bf16 autocast, SDPA with the shared-prompt 4D masks, the chunked LM head,
LoRA's forward there (peft's own), QLoRA through bitsandbytes, and the LM methods' training loops.

They skip without CUDA. `scripts/gpu_check.py --dry-run` runs them on the CPU (TRAINFORGE_GPU_DRY_RUN=1) against
a tiny model, so that the code is known to run before GPU time is spent; `scripts/gpu_check.py` runs them on the
GPU with SmolLM2-135M's architecture (random weights where the weights are not installed). Measured numbers go
into the JUnit XML's properties (`record_property`), which gpu_check copies into its step JSON.

Tolerances: fp32 comparisons are float rounding (TF32 off, torch's default for matmuls); under bf16 autocast the
two sides run different matmul and attention shapes, so bf16 rounds them apart: per token at most 0.25 nats and
on average 0.01, per sequence 1% of its summed log-prob (CPU bf16, SmolLM2 shapes with 4 layers: 6e-3 at most,
5e-5 on average). Each bf16 comparison is checked to resolve a real error: the same forward with the rejected answers
allowed to see the chosen ones is off by at least ten times the measured difference."""

import os

import pytest
import torch

from conftest import FrozenWeightsWatch, tiny_run_config, train_losses
from trainforge.hardware import auto_precision, unwrapped
from trainforge.models.registry import resolve_model
from trainforge.pipeline import train

DRY_RUN = os.environ.get("TRAINFORGE_GPU_DRY_RUN") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE != "cuda" and not DRY_RUN,
        reason="needs a CUDA GPU (scripts/gpu_check.py --dry-run runs these on the CPU)",
    ),
]
# SmolLM2's shapes (30 layers, 9 query / 3 key-value heads of 64, a 49152-token vocabulary): on the GPU the
# comparisons run at the size the benchmark trains; gpu_check's dry run makes this alias a tiny random model.
SHAPES_MODEL = "smollm2-135m-instruct"
BF16 = auto_precision(DEVICE)[0] == "bf16"
QUICK = {"evaluation": {"before_after": False, "generation": False}}
BNB_MISSING = "bitsandbytes is not installed (scripts/gpu_kit.py --no-bitsandbytes left it out)"


class DeviceWatch(FrozenWeightsWatch):
    """Also records where the trained model's weights are, its attention kernel and the autocast dtype a step runs
    under (read by a hook on the input embeddings, which every forward runs: the chunked loss skips the model's own
    forward)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, model=model, **kwargs)
        self.device = next(model.parameters()).device.type
        self.attention = unwrapped(model).config._attn_implementation
        self.autocast = set()
        self.hook = model.get_input_embeddings().register_forward_hook(
            lambda *_: self.autocast.add(
                torch.get_autocast_dtype(DEVICE) if torch.is_autocast_enabled(DEVICE) else None
            )
        )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        super().on_train_end(args, state, control, model=model, **kwargs)
        self.hook.remove()  # the evaluation after training is no training step


def _train(runs_dir, record_property, steps: int = 8, watch: DeviceWatch | None = None, **sections):
    """A tiny-llama run on the device: `steps` optimizer steps (1 in the dry run, which runs the code; the GPU
    run judges the learning), its losses finite and falling, every step under the expected autocast."""
    watch = watch or DeviceWatch()
    sections["training"] = {**sections.get("training", {}), "max_steps": 1 if DRY_RUN else steps}
    run = train(tiny_run_config(runs_dir, **QUICK, **sections), callbacks=[watch])
    losses = train_losses(run)
    record_property("losses", [round(x, 4) for x in losses])
    assert losses and all(torch.isfinite(torch.tensor(losses))), losses
    assert DRY_RUN or sum(losses[-2:]) < sum(losses[:2]), f"loss did not fall: {losses}"
    assert watch.device == DEVICE
    assert watch.autocast == ({torch.bfloat16} if BF16 else {None})
    assert run.info()["status"] == "completed"
    return run, watch


def test_lora_sft_trains_on_the_device_in_bf16_with_sdpa(runs_dir, record_property):
    _, watch = _train(runs_dir, record_property)
    assert len(watch.before) > 0 and watch.changed == []  # the base stays bit-identical
    # on a GPU the attention kernel is SDPA (eager is for short sequences on a CPU)
    assert watch.attention == ("sdpa" if DEVICE == "cuda" else "eager")


def test_full_fine_tuning_trains_on_the_device(runs_dir, record_property):
    _, watch = _train(runs_dir, record_property, method={"name": "full"}, training={"learning_rate": 3e-3})
    assert watch.before == {}  # every weight trains


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_with_a_shared_prompt_trains_on_the_device(runs_dir, record_property, objective, monkeypatch):
    """Each training step's policy forward runs the shared-prompt layout (SDPA with its 4D mask on a GPU)."""
    from trainforge.methods import shared_prefix

    layouts = []
    real = shared_prefix.pair_layout
    monkeypatch.setattr(shared_prefix, "pair_layout", lambda *a: layouts.append(torch.is_grad_enabled()) or real(*a))
    run, _ = _train(
        runs_dir,
        record_property,
        steps=6,
        data={"task": "constrained-answers", "format": "preference", "task_size": 48},
        training={"objective": objective, "learning_rate": 5e-3, "shared_prompt": True},
    )
    assert layouts.count(True) == len(train_losses(run))  # one policy forward a step


def test_qlora_trains_a_4bit_base_on_the_device(runs_dir, record_property):
    bnb = pytest.importorskip("bitsandbytes", reason=BNB_MISSING)

    class Quantized(DeviceWatch):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            super().on_train_begin(args, state, control, model=model, **kwargs)
            self.layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
            self.weight_devices = {m.weight.device.type for m in self.layers}

    _, watch = _train(runs_dir, record_property, steps=12, watch=Quantized(), method={"name": "qlora"})
    assert len(watch.layers) == 2 * 7 and watch.weight_devices == {DEVICE}  # every projection, in 4 bits there
    # bitsandbytes repacks 4-bit weights for its CPU kernel at their first forward (tests/unit/test_methods.py
    # checks them on the CPU after the baseline evaluation has run one)
    assert watch.changed == [] or DEVICE == "cpu"


@pytest.mark.skipif(DEVICE != "cuda", reason="peft fits LoftQ on a CUDA GPU only")
def test_qlora_with_loftq_init_on_the_gpu(runs_dir, record_property):
    pytest.importorskip("bitsandbytes", reason=BNB_MISSING)
    _train(runs_dir, record_property, method={"name": "qlora", "lora": {"init": "loftq"}})


def _shapes_model(**kwargs):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(resolve_model(SHAPES_MODEL), dtype=torch.float32, **kwargs).to(DEVICE)


def _pairs(vocab: int):
    """Preference pairs of realistic lengths: prompts of 10 to 90 tokens, answers sharing their first tokens or
    not, one pair cut short by max_length."""
    numbers = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(5, vocab, (n,), generator=numbers).tolist()

    pairs = []
    for prompt, chosen, rejected, common in [(60, 20, 25, 0), (40, 30, 10, 3), (90, 5, 40, 0), (10, 12, 12, 5)]:
        start = ids(common)
        pairs.append(
            {"prompt_ids": ids(prompt), "chosen_ids": start + ids(chosen), "rejected_ids": start + ids(rejected)}
        )
    return pairs


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_shared_prompt_log_probs_equal_trls_forward(attention, precision, record_property, monkeypatch):
    """The DPO policy forward with each pair's prompt run once returns the log-probs TRL's own fused-head forward
    returns for the collator's two rows per pair, on the device, with a LoRA adapter active."""
    if precision == "bf16" and not BF16:
        pytest.skip(f"{DEVICE} has no fast bf16")
    from peft import LoraConfig, get_peft_model
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    from trl.trainer.utils import add_fused_lm_head

    from trainforge.methods import shared_prefix

    model = _shapes_model(attn_implementation=attention)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    batch = DataCollatorForPreference(pad_token_id=0, max_length=110)(_pairs(model.config.vocab_size))
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    scored = labels[:, 1:] != -100

    def log_probs():
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True
            )
        return out.log_probs.float()

    trl = log_probs()
    shared_prefix.share_pair_prefixes(model)
    shared = log_probs()
    error = (shared - trl).abs()[scored]
    # the control: the rejected answers also see the chosen ones (the chosen-blind mask dropped)
    real_bias = shared_prefix.attention_bias
    monkeypatch.setattr(
        shared_prefix,
        "attention_bias",
        lambda layout, dtype, boolean: real_bias(
            shared_prefix.PairLayout(layout.input_ids, layout.position_ids, layout.part.clamp(max=1), layout.source),
            dtype,
            boolean,
        ),
    )
    broken = (log_probs() - trl).abs()[scored]
    sums = trl.sum(dim=1)
    relative = ((shared.sum(dim=1) - sums).abs() / sums.abs()).max().item()
    record_property("max_abs_error", error.max().item())
    record_property("mean_abs_error", error.mean().item())
    record_property("max_relative_sequence_error", relative)
    record_property("broken_mask_mean_abs_error", broken.mean().item())
    assert scored.sum() >= 150  # the comparison covers the answers' tokens
    if precision == "fp32":
        torch.testing.assert_close(shared, trl, atol=1e-4, rtol=1e-5)
    else:
        assert error.max() <= 0.25 and error.mean() <= 0.01 and relative <= 0.01
    assert broken.mean() > 10 * max(error.mean().item(), 1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_chunked_lm_head_equals_full_logits(precision, record_property):
    """The loss at label positions, computed in chunks of 1024 with the head recomputed in backward, equals the
    causal LM's own loss over full logits (value and LM-head gradient); on a GPU its peak memory is lower."""
    if precision == "bf16" and not BF16:
        pytest.skip(f"{DEVICE} has no fast bf16")
    from trainforge.methods.chunked_loss import IGNORE, label_positions_loss

    model = _shapes_model()
    numbers = torch.Generator().manual_seed(1)
    ids = torch.randint(5, model.config.vocab_size, (2, 700), generator=numbers).to(DEVICE)
    labels = ids.clone()
    labels[:, :40] = IGNORE  # a prompt without loss: 2 × 659 scored positions, two chunks
    head = model.get_output_embeddings().weight

    def loss_grad_peak(chunked: bool):
        model.zero_grad()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if chunked:
                hidden = model.model(input_ids=ids).last_hidden_state
                loss = label_positions_loss(hidden, model.get_output_embeddings(), labels)
            else:
                loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0
        return loss.detach().float(), head.grad.detach().clone(), peak

    full, full_grad, full_peak = loss_grad_peak(False)
    chunked, chunked_grad, chunked_peak = loss_grad_peak(True)
    grad_error = ((chunked_grad - full_grad).norm() / full_grad.norm()).item()
    record_property("loss_full", full.item())
    record_property("loss_chunked", chunked.item())
    record_property("grad_relative_error", grad_error)
    record_property("peak_mb_full", round(full_peak / 2**20))
    record_property("peak_mb_chunked", round(chunked_peak / 2**20))
    rtol, grad_tol = (1e-5, 1e-4) if precision == "fp32" else (1e-2, 3e-2)
    torch.testing.assert_close(chunked, full, rtol=rtol, atol=0)
    assert grad_error <= grad_tol
    if DEVICE == "cuda":
        assert chunked_peak < full_peak


def test_lora_forward_on_the_device_is_pefts(record_property):
    """The fused LoRA forward is a CPU speed-up: on a GPU the layer runs peft's own forward, bit for bit."""
    import copy

    from peft import LoraConfig, get_peft_model

    from trainforge.methods.fused_lora import use_fused_lora

    model = get_peft_model(_shapes_model(), LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    fused = copy.deepcopy(model)
    use_fused_lora(fused)
    ids = torch.randint(5, 1000, (2, 64), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=BF16):
        want, got = model(input_ids=ids).logits.float(), fused(input_ids=ids).logits.float()
    relative = ((got - want).norm() / want.norm()).item()
    record_property("relative_difference", relative)
    if DEVICE == "cuda":
        assert torch.equal(got, want)
    else:  # the fused addmm rounds once where peft rounds thrice (tests/unit/test_fused_lora.py)
        assert relative <= (2e-2 if BF16 else 1e-5)

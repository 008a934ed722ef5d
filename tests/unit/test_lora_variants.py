"""The LoRA variants (peft's DoRA, rsLoRA and inits) train on a tiny LLaMA; each saved adapter carries its flag, loads
in plain peft with the trained model's logits, and merges (`export --merge`) to the same logits. The fused LoRA
forward takes the variants it can compute and leaves DoRA to peft; the chunked loss steps aside for an adapted LM head.
Settings a run would not apply are refused."""

import json

import pytest
import torch
from test_textclass import tc_config
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from conftest import tiny_run_config
from trainforge.errors import ConfigError
from trainforge.methods.fused_lora import FusedLoraLinear, use_fused_lora
from trainforge.pipeline import train

IDS = torch.tensor([[1, 520, 9531, 198, 4093, 25, 30, 2817]])
R, ALPHA = 4, 8


class Watch(TrainerCallback):
    """The model as training starts (its logits, whether any B matrix is nonzero, A's row norms) and as it ends (its
    logits, how many layers run the fused forward), in eval mode."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start_logits = _logits(model)
        self.b_nonzero = any(p.count_nonzero() > 0 for n, p in model.named_parameters() if "lora_B" in n)
        self.a_row_norms = torch.cat([p.detach().norm(dim=1) for n, p in model.named_parameters() if "lora_A" in n])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.end_logits = _logits(model)
        self.fused = sum(isinstance(m, FusedLoraLinear) for m in model.modules())


def _logits(model) -> torch.Tensor:
    training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=IDS.to(model.device)).logits.float().cpu()
    model.train(training)
    return logits


def _base():
    from trainforge.models import load_causal_lm

    return load_causal_lm("tiny-llama")


def _variant_run(runs_dir, method="lora", **lora):
    watch = Watch()
    config = tiny_run_config(
        runs_dir,
        method={"name": method, "lora": {"r": R, "alpha": ALPHA, "dropout": 0.0, **lora}},
        training={"max_steps": 4, "precision": "fp32"},  # fp32: the in-memory and reloaded models compare exactly
        evaluation={"before_after": False, "generation": False, "perplexity": False},
    )
    return train(config, callbacks=[watch]), watch


def _check_saved_adapter(run, watch, atol: float = 1e-4) -> dict:
    """Plain peft loads the adapter onto a fresh base with the trained model's logits; the merged model
    (`export --merge`) gives the adapter's logits. Returns the adapter config."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainforge.inference.merge import merge_run

    peft_model = PeftModel.from_pretrained(_base(), run.path / "adapter").eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=IDS).logits
        base = _base()(input_ids=IDS).logits
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapter learned something
    assert (adapted - watch.end_logits).abs().max() < atol
    merged = AutoModelForCausalLM.from_pretrained(merge_run(run)).eval()
    with torch.no_grad():
        assert (merged(input_ids=IDS).logits - adapted).abs().max() < 1e-4
    return json.loads((run.path / "adapter" / "adapter_config.json").read_text())


def test_dora_saves_its_magnitudes_and_runs_peft_forward(runs_dir):
    run, watch = _variant_run(runs_dir, use_dora=True)
    config = _check_saved_adapter(run, watch)
    assert config["use_dora"] is True
    assert watch.fused == 0  # every DoRA layer ran peft's forward
    from safetensors import safe_open

    with safe_open(str(run.path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert sum("lora_magnitude_vector" in k for k in f.keys()) == 2 * 7  # noqa: SIM118


def test_rslora_scales_by_the_root_of_the_rank_in_the_fused_forward(runs_dir):
    from peft import PeftModel

    run, watch = _variant_run(runs_dir, use_rslora=True)
    config = _check_saved_adapter(run, watch)
    assert config["use_rslora"] is True
    assert watch.fused == 2 * 7  # a plain layer with another scale: fused
    loaded = PeftModel.from_pretrained(_base(), run.path / "adapter")
    assert loaded.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == ALPHA / R**0.5


def test_gaussian_init_is_recorded(runs_dir):
    run, watch = _variant_run(runs_dir, init="gaussian")
    assert _check_saved_adapter(run, watch)["init_lora_weights"] == "gaussian"
    assert not watch.b_nonzero and watch.fused == 2 * 7


@pytest.mark.parametrize("init", ["pissa", "olora", "corda"])
def test_residual_inits_save_a_plain_lora_of_the_untouched_base(runs_dir, init):
    """PiSSA / OLoRA / CorDA start A and B from the weights (and, CorDA, the training rows' activations), the base
    keeping the residual: the model's outputs are the base's at the start. The saved adapter is peft's conversion
    to a plain LoRA of rank 2r on the original base, with the trained model's logits there."""
    run, watch = _variant_run(runs_dir, init=init)
    with torch.no_grad():
        assert (watch.start_logits - _base()(input_ids=IDS).logits).abs().max() < 1e-4
    assert watch.b_nonzero and watch.fused == 2 * 7
    config = _check_saved_adapter(run, watch)
    assert config["init_lora_weights"] is True and config["r"] == 2 * R and config["lora_alpha"] == 2 * ALPHA


def test_eva_starts_from_the_activations_principal_directions(runs_dir):
    run, watch = _variant_run(runs_dir, init="eva")
    config = _check_saved_adapter(run, watch)
    assert config["init_lora_weights"] == "eva"
    # A's rows are unit-norm singular vectors of the layers' inputs (Kaiming-uniform rows are not), B starts at 0
    assert torch.allclose(watch.a_row_norms, torch.ones_like(watch.a_row_norms), atol=1e-4)
    assert not watch.b_nonzero


@pytest.mark.skipif(not torch.cuda.is_available(), reason="peft computes LoftQ on a CUDA (or XPU) GPU")
def test_loftq_fits_the_quantization_error_of_the_4bit_base(runs_dir):
    """QLoRA's start with LoftQ is closer to the full-precision base than with B = 0; the adapter then trains, saves
    and merges like any QLoRA adapter (onto the full-precision base)."""
    from trainforge.methods import get_method
    from trainforge.models import load_language_model

    with torch.no_grad():
        want = _base()(input_ids=IDS).logits
    errors = {}
    for init in ("default", "loftq"):
        method = get_method(tiny_run_config(runs_dir, method={"name": "qlora", "lora": {"r": R, "init": init}}))
        model = method.prepare(
            load_language_model("tiny-llama", "sft", quantization_config=method.quantization_config())
        )
        errors[init] = (_logits(model) - want).norm().item()
    assert errors["loftq"] < 0.8 * errors["default"], errors

    run, watch = _variant_run(runs_dir, method="qlora", init="loftq")
    assert watch.b_nonzero
    config = _check_saved_adapter(run, watch, atol=float("inf"))  # trained on the 4-bit base, reloaded on fp32
    assert config["init_lora_weights"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_loftq_is_refused_without_a_gpu(runs_dir):
    config = tiny_run_config(runs_dir, method={"name": "qlora", "lora": {"init": "loftq"}})
    with pytest.raises(ConfigError, match="on a CUDA or XPU GPU"):
        train(config)


def _small_peft_model(**lora):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, **lora))


def test_fused_forward_takes_rslora_and_residual_inits_and_leaves_dora_to_peft(capsys):
    import copy

    ids = torch.randint(0, 97, (2, 9))
    plain = _small_peft_model(target_modules="all-linear", use_rslora=True, init_lora_weights="pissa")
    fused = copy.deepcopy(plain)
    use_fused_lora(fused)
    assert sum(isinstance(m, FusedLoraLinear) for m in fused.modules()) == 2 * 7
    with torch.no_grad():
        assert torch.allclose(fused(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5)
    assert "fused LoRA" not in capsys.readouterr().err

    dora = _small_peft_model(target_modules="all-linear", use_dora=True)
    use_fused_lora(dora)
    assert not any(isinstance(m, FusedLoraLinear) for m in dora.modules())
    assert "14 DoraLinearVariant" in capsys.readouterr().err.replace("\n", " ")


def test_chunked_loss_steps_aside_for_an_adapted_lm_head(capsys):
    from trainforge.methods.chunked_loss import supports_chunked_loss

    assert supports_chunked_loss(_small_peft_model(target_modules="all-linear"))
    assert not supports_chunked_loss(_small_peft_model(target_modules=["q_proj", "lm_head"]))
    assert "LM head carries an adapter" in capsys.readouterr().err


PAIRS = {"data": {"task": "constrained-answers"}}


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"method": {"name": "full", "lora": {"use_dora": True}}}, "`method.lora.use_dora` = True is a LoRA variant"),
        ({"method": {"name": "lora", "freeze": {"trainable_layers": 1}}}, "`method.freeze` keys"),
        ({"method": {"name": "lora", "lora": {"init": "loftq"}}}, "only method qlora quantizes"),
        ({"method": {"name": "qlora", "lora": {"init": "pissa"}}}, "a 4-bit base cannot hold"),
        ({"method": {"name": "lora", "lora": {"init": "olora", "use_dora": True}}}, "drops DoRA's magnitude"),
        ({"method": {"lora": {"init": "pissa"}}, **PAIRS, "training": {"objective": "dpo"}}, "reference"),
        ({"method": {"lora": {"init": "eva"}}, **PAIRS, "training": {"objective": "orpo"}}, "objective sft or clm"),
    ],
)  # fmt: skip
def test_settings_a_run_would_not_apply_are_refused(runs_dir, sections, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        tiny_run_config(runs_dir, **sections)


def test_residual_and_data_inits_are_refused_for_text_classification(runs_dir):
    for init, message in (("pissa", "not the trained head"), ("eva", "task text-classification")):
        with pytest.raises(ConfigError, match=message):
            tc_config(runs_dir, method={"name": "lora", "lora": {"init": init}})

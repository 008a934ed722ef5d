"""Export for inference: int8 / int4 weight-only quantization and ONNX, checked against the fp32 model."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_run_config


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from trainforge.pipeline import train

    runs = tmp_path_factory.mktemp("runs")
    # fp32: the same trained weights on every CPU (bf16 autocast is picked only where the CPU has bf16 units)
    cfg = tiny_run_config(
        runs,
        name="full",
        method={"name": "full"},
        training={"max_steps": 2, "save_steps": 2, "precision": "fp32"},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    return train(cfg)


def _batch():
    ids = torch.randint(10, 1000, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


def _logits(folder, ids, mask):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu").eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


# Bounds on the logits' change averaged over positions: the single worst position of a 2-step random model swings
# with the CPU's kernels (int8 on an AVX2 CPU: 6.2% at the worst of 44 positions, 2.5% on average). int4 (NF4,
# blocks of 64) moves them far more than int8; its bound is on their direction.
@pytest.mark.parametrize(
    "kind, max_share, max_error, min_cosine", [("int8", 0.30, 0.04, 0.999), ("int4", 0.20, 1.0, 0.85)]
)
def test_quantized_export_is_small_and_close(lm_run, kind, max_share, max_error, min_cosine):
    from transformers import AutoModelForCausalLM

    from trainforge.cli import app
    from trainforge.export.quantize import linear_weight_bytes

    result = CliRunner().invoke(app, ["export", str(lm_run.path), "--quantize", kind])
    assert result.exit_code == 0, result.output
    out = lm_run.path / f"export-{kind}"
    fp32_model = AutoModelForCausalLM.from_pretrained(lm_run.path / "model")
    share = linear_weight_bytes(out, fp32_model) / linear_weight_bytes(lm_run.path / "model", fp32_model)
    assert share <= max_share  # of the Linear layers' weights: embeddings and norms stay as they were
    ids, mask = _batch()
    ref, got = _logits(lm_run.path / "model", ids, mask), _logits(out, ids, mask)
    real = mask.bool()
    error = ((got - ref).abs().max(-1).values[real] / ref.abs().max(-1).values[real]).mean().item()
    cosine = torch.nn.functional.cosine_similarity(got[real], ref[real], dim=-1).mean().item()
    print(
        f"{kind}: linear weights {share:.1%} of fp32, mean relative logit error {error:.4f}, mean cosine {cosine:.4f}"
    )
    assert error <= max_error  # the largest logit change, relative to the largest logit, per position
    assert cosine >= min_cosine


def test_onnx_export_matches_pytorch(lm_run):
    from trainforge.export.onnx import export_run_onnx, onnx_logits

    out = export_run_onnx(lm_run)
    ids, mask = _batch()
    ref = _logits(lm_run.path / "model", ids, mask).numpy()
    got = onnx_logits(out, ids[:3, :10], mask[:3, :10])  # other shapes than the traced ones: dynamic axes work
    np.testing.assert_allclose(got, ref[:3, :10], atol=1e-4, rtol=1e-4)
    assert (out / "tokenizer.json").is_file()


def test_quantize_options_are_checked(lm_run):
    from trainforge.cli import app

    result = CliRunner().invoke(app, ["export", str(lm_run.path), "--quantize", "int3"])
    assert "expected one of bf16, int8, int4" in str(result.exception)
    result = CliRunner().invoke(app, ["export", str(lm_run.path), "--format", "tflite"])
    assert "expected onnx" in str(result.exception)


def test_onnx_int8_export_is_smaller_and_close(lm_run):
    from trainforge.export.onnx import export_run_onnx, onnx_logits

    fp32 = export_run_onnx(lm_run, out=lm_run.path / "onnx-fp32")
    int8 = export_run_onnx(lm_run, "int8")
    assert (int8 / "model.onnx").stat().st_size <= 0.30 * (fp32 / "model.onnx").stat().st_size  # embeddings too
    ids, mask = _batch()
    ref, got = torch.from_numpy(onnx_logits(fp32, ids, mask)), torch.from_numpy(onnx_logits(int8, ids, mask))
    assert (
        torch.nn.functional.cosine_similarity(got[mask.bool()], ref[mask.bool()], dim=-1).min() >= 0.98
    )  # activations are quantized too


def test_int4_classifier_keeps_its_head_and_runs(tmp_path):
    """bitsandbytes' CPU 4-bit kernel wants out_features divisible by 32: a 4-class head stays in full precision."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    from trainforge.export.quantize import quantize_folder

    torch.manual_seed(0)
    BertForSequenceClassification(
        BertConfig(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_labels=4,
        )
    ).save_pretrained(tmp_path / "fp32")
    out = quantize_folder(tmp_path / "fp32", AutoModelForSequenceClassification, "int4", tmp_path / "int4")
    model = AutoModelForSequenceClassification.from_pretrained(out, device_map="cpu").eval()
    assert type(model.classifier) is torch.nn.Linear and model.classifier.out_features == 4
    assert any("4bit" in type(m).__name__ for m in model.modules())  # the encoder's Linear layers are quantized
    ids, mask = _batch()
    with torch.no_grad():
        logits = model(input_ids=ids % 1000, attention_mask=mask).logits
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()

"""GGUF export for llama.cpp: tensor names, types and shapes as llama.cpp reads them, Q8_0 close to F16, and a
round trip through transformers' GGUF import giving the merged LoRA model's logits back."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_run_config

LAYER = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from trainforge.pipeline import train

    cfg = tiny_run_config(
        tmp_path_factory.mktemp("runs"),
        name="lora",
        training={"max_steps": 4, "save_steps": 4},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    return train(cfg)


@pytest.fixture(scope="module")
def exports(lora_run):
    from trainforge.cli import app

    files = {}
    for quantize in ("f16", "q8_0"):
        result = CliRunner().invoke(app, ["export", str(lora_run.path), "--format", "gguf", "--quantize", quantize])
        assert result.exit_code == 0, result.output
        files[quantize] = lora_run.path / f"export-gguf-{quantize}" / "model.gguf"
    return files


@pytest.fixture(scope="module")
def readers(exports):
    """Read once: parsing the 49k-token vocabulary takes seconds."""
    import gguf

    return {quantize: gguf.GGUFReader(path) for quantize, path in exports.items()}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_gguf_layout_is_llama_cpps(readers):
    import gguf

    T = gguf.GGMLQuantizationType
    for quantize, matrix_type in (("f16", T.F16), ("q8_0", T.Q8_0)):
        reader = readers[quantize]
        tensors = {t.name: t for t in reader.tensors}
        expected = {"token_embd.weight", "output_norm.weight"} | {
            f"blk.{i}.{n}.weight" for i in range(2) for n in LAYER
        }
        assert set(tensors) == expected  # tied embeddings: no output.weight
        assert list(tensors["token_embd.weight"].shape) == [64, 49152]  # GGUF lists dims innermost first
        assert list(tensors["blk.1.attn_k.weight"].shape) == [64, 32]  # 2 kv heads x 16
        assert list(tensors["blk.0.ffn_down.weight"].shape) == [128, 64]
        for name, t in tensors.items():
            assert t.tensor_type == (T.F32 if "norm" in name else matrix_type), name
        assert reader.fields["general.architecture"].contents() == "llama"
        assert reader.fields["llama.block_count"].contents() == 2
        assert reader.fields["llama.attention.head_count_kv"].contents() == 2
        assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
        assert len(reader.fields["tokenizer.ggml.tokens"].data) == 49152


def test_q8_0_weights_are_close_to_f16(readers):
    import gguf

    f16 = {t.name: t for t in readers["f16"].tensors}
    q8_0 = readers["q8_0"].tensors
    for t in q8_0:
        q = gguf.quants.dequantize(t.data, t.tensor_type).reshape(f16[t.name].data.shape)
        ref = f16[t.name].data.astype(np.float32)
        # one int8 step per 32-value block is max|block|/127: error at most half of it, plus F16 rounding
        assert np.abs(q - ref).max() <= np.abs(ref).max() / 254 + 1e-3, t.name
    # 34 bytes per 32 weights against 64; the tokenizer metadata both files carry is left out
    assert sum(t.n_bytes for t in q8_0) < 0.54 * sum(t.n_bytes for t in f16.values())


def test_gguf_round_trip_gives_the_merged_models_logits(lora_run, exports):
    from transformers import AutoModelForCausalLM

    from trainforge.export.quantize import run_model
    from trainforge.models.loading import load_causal_lm

    merged, _, _ = run_model(lora_run)
    back = AutoModelForCausalLM.from_pretrained(
        exports["f16"].parent, gguf_file="model.gguf", dtype=torch.float32
    ).eval()
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    want, got = _logits(merged, ids), _logits(back, ids)
    assert (want - got).abs().max() < 0.02 * want.abs().max()  # F16 rounding only: the q/k permutation round-trips
    base = _logits(load_causal_lm("tiny-llama").eval(), ids)
    assert (want - base).abs().max() > 10 * (want - got).abs().max()  # the adapter is in the export


def test_gguf_refusals(lora_run, tmp_path):
    from trainforge.cli import app
    from trainforge.errors import ConfigError
    from trainforge.export.gguf import export_gguf
    from trainforge.models.loading import load_causal_lm, load_tokenizer

    result = CliRunner().invoke(app, ["export", str(lora_run.path), "--format", "gguf", "--quantize", "int8"])
    assert "expected one of f16, q8_0" in str(result.exception)
    with pytest.raises(ConfigError, match="different vocabulary"):
        export_gguf(load_causal_lm("tiny-llama"), load_tokenizer("tiny-bert"), tmp_path / "x")
    assert not (tmp_path / "x").exists()

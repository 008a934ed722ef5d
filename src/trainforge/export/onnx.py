"""ONNX export (torch.onnx, dynamo exporter) of a run's model as a logits function of (input_ids, attention_mask),
optionally with onnxruntime's dynamic INT8 quantization of its MatMul weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainforge.errors import ConfigError
from trainforge.models.saving import portable_config, save_tokenizer
from trainforge.tracking.rundir import RunDir, atomic_dir

INPUTS = ("input_ids", "attention_mask")


class LogitsOnly(torch.nn.Module):
    """The model as one tensor in, one out: no KV cache, no output dataclass (what an exporter can trace)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.causal = "CausalLM" in type(model).__name__  # decoders take use_cache; encoders may not

    def forward(self, input_ids, attention_mask):
        extra = {"use_cache": False} if self.causal else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def _onnx_libraries():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            "`--format onnx` needs onnx, onnxscript and onnxruntime; install them with "
            "`pip install 'trainforge[onnx]'`."
        ) from None


def export_onnx(model, tokenizer, out: Path, quantize: str | None = None) -> Path:
    """`out/model.onnx` (+ tokenizer files); with quantize='int8' the weights are dynamically quantized to INT8."""
    _onnx_libraries()
    if quantize not in (None, "int8"):
        raise ConfigError(
            f"Option `--quantize` = {quantize!r} with `--format onnx`: onnxruntime quantizes to int8 only."
        )
    wrapper = LogitsOnly(model.eval())
    ids = torch.full((2, 8), tokenizer.pad_token_id or 0, dtype=torch.long)
    ids[:, :6] = torch.arange(6) + 10
    mask = (ids != (tokenizer.pad_token_id or 0)).long()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with atomic_dir(out) as tmp:
        fp32 = tmp / ("model-fp32.onnx" if quantize else "model.onnx")
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(fp32),
                input_names=list(INPUTS),
                output_names=["logits"],
                dynamic_shapes={n: {0: batch, 1: seq} for n in INPUTS},
                dynamo=True,
                external_data=False,
            )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8)
            fp32.unlink()
        save_tokenizer(tokenizer, tmp)
        model.config.save_pretrained(tmp)  # labels (id2label) and architecture for whoever serves it
        portable_config(tmp)
        (tmp / "export.json").write_text(json.dumps({"format": "onnx", "quantize": quantize, "inputs": list(INPUTS)}))
    return out


def onnx_logits(folder: Path, input_ids, attention_mask):
    """Run an exported model with onnxruntime: numpy logits."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(folder) / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]


def export_run_onnx(run: RunDir, quantize: str | None = None, out: Path | None = None) -> Path:
    """`<run>/export-onnx[-int8]/` (or `out`) with its model card."""
    from trainforge.export.card import write_card
    from trainforge.export.quantize import run_model

    model, tokenizer, _ = run_model(run)
    target = export_onnx(
        model, tokenizer, Path(out) if out else run.path / f"export-onnx{'-' + quantize if quantize else ''}", quantize
    )
    write_card(run, target, "onnx")
    return target

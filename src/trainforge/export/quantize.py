"""Smaller models for inference: weight-only quantization (int8 through torchao, int4 NF4 through bitsandbytes,
or bf16) written as ordinary transformers folders that `from_pretrained` loads back, quantization included."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from trainforge.errors import ConfigError, RunError
from trainforge.models.saving import save_model, save_tokenizer
from trainforge.tracking.rundir import RunDir, atomic_dir

QUANTIZE = ("bf16", "int8", "int4")


def quantization_config(kind: str):
    """The transformers quantization config for `kind` (None for bf16, a plain cast)."""
    if kind == "int8":
        try:
            from torchao.quantization import Int8WeightOnlyConfig
        except ImportError:
            raise ConfigError(
                "`--quantize int8` uses torchao; install it with `pip install 'trainforge[quantize]'`."
            ) from None
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    if kind == "int4":  # torchao's int4 kernels need CUDA (or mslk); bitsandbytes NF4 runs on CPU
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    if kind == "bf16":
        return None
    raise ConfigError(f"Option `--quantize` = {kind!r}: expected one of {', '.join(QUANTIZE)}.")


def quantize_folder(src: Path, auto_class, kind: str, out: Path) -> Path:
    """Load the fp32 model folder `src` quantized to `kind` and save it (with its tokenizer files) to `out`."""
    import logging

    from transformers.utils import logging as hf_logging

    config = quantization_config(kind)
    if kind == "int4" and "CausalLM" not in auto_class.__name__:
        # A classifier's head stays in full precision: it is tiny, and bitsandbytes' CPU kernel wants out_features
        # divisible by 32 (a 4-class head fails at the first forward).
        config.llm_int8_skip_modules = ["classifier", "score"]
    kwargs = (
        {"dtype": torch.bfloat16}
        if config is None
        else {"dtype": torch.float32, "quantization_config": config, "device_map": "cpu"}
    )
    logging.getLogger("torchao").setLevel(logging.ERROR)  # its CUDA-only kernels fail to load on CPU, harmlessly
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = auto_class.from_pretrained(src, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    with atomic_dir(out) as tmp:
        save_model(model, tmp)
        for f in src.iterdir():  # tokenizer, labels and generation files travel with the weights
            if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json" and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
    return out


def run_model(run: RunDir):
    """(fp32 model with adapters merged in, tokenizer, transformers auto class) of a finished run whose task
    exports (language models, text classifiers)."""
    from trainforge.tasks import registry

    model, tokenizer, auto = registry.for_run(run).hook("export_model", f"Run {run.path}")(run)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), tokenizer, auto


def quantize_run(run: RunDir, kind: str, out: Path | None = None) -> Path:
    """Write `<run>/export-<kind>/` (or `out`): the run's model quantized for inference, with its model card."""
    from trainforge.export.card import write_card

    quantization_config(kind)  # fail on a missing library before loading anything
    model, tokenizer, auto = run_model(run)
    tmp = Path(tempfile.mkdtemp(prefix="tf-export-"))
    try:
        save_model(model, tmp)
        save_tokenizer(tokenizer, tmp)
        target = Path(out) if out else run.path / f"export-{kind}"
        quantize_folder(tmp, auto, kind, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (target / "export.json").write_text(json.dumps({"run": str(run.path), "quantize": kind}))
    write_card(run, target, "quantized")
    return target


def linear_weight_bytes(folder: Path, model_fp32) -> int:
    """Bytes the saved checkpoint spends on the Linear layers' weights (whatever tensors a quantizer split them into),
    leaving out embeddings and norms, which weight-only quantization keeps."""
    from safetensors import safe_open

    prefixes = tuple(f"{name}." for name, m in model_fp32.named_modules() if isinstance(m, torch.nn.Linear))
    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                if key.startswith(prefixes):
                    t = st.get_tensor(key)
                    total += t.numel() * t.element_size()
    if not total:
        raise RunError(f"No Linear weights found in {folder}.")
    return total

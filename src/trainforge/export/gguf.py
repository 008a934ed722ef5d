"""GGUF export of LLaMA-architecture models (F16 or Q8_0) for llama.cpp, written with the `gguf` package.

Tensor names come from gguf's own HF→GGUF name map. Q/K projection rows are permuted into the interleaved rope
layout llama.cpp expects (as its convert_hf_to_gguf.py does; transformers' GGUF import undoes it). The tokenizer
metadata is copied from the bundled SmolLM2 GGUF, so the model's tokenizer must be that one (SmolLM2, tiny-llama
and every run fine-tuned from them)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from trainforge.errors import ConfigError
from trainforge.tracking.rundir import RunDir, atomic_dir

QUANTIZE = ("f16", "q8_0")
GGUF_FILE = "model.gguf"


def _permute_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's half-split rotary layout → llama.cpp's interleaved pairs, per head (rows of a q/k projection)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@functools.cache
def _bundled_tokenizer_metadata() -> dict:
    """key → (value, type, array element type) of the bundled SmolLM2 GGUF's tokenizer.* fields (reading takes
    seconds: cached)."""
    import gguf

    from trainforge.models.registry import smollm2_gguf_path

    reader = gguf.GGUFReader(smollm2_gguf_path())
    return {
        k: (f.contents(), f.types[0], f.types[-1] if len(f.types) > 1 else None)
        for k, f in reader.fields.items()
        if k.startswith("tokenizer.")
    }


def _tokenizer_metadata(tokenizer) -> dict:
    """The bundled tokenizer metadata, if `tokenizer` has exactly its vocabulary."""
    fields = _bundled_tokenizer_metadata()
    tokens = fields["tokenizer.ggml.tokens"][0]
    if tokenizer.get_vocab() != {t: i for i, t in enumerate(tokens)}:
        raise ConfigError(
            f"GGUF export copies its tokenizer metadata from the bundled SmolLM2 GGUF, but this model's tokenizer "
            f"({len(tokenizer)} tokens) has a different vocabulary. Only models that use the SmolLM2 tokenizer "
            "(smollm2-135m-instruct, tiny-llama and runs fine-tuned from them) can be exported to GGUF for now."
        )
    return fields


def _check_quantize(quantize: str) -> None:
    if quantize not in QUANTIZE:
        raise ConfigError(
            f"Option `--quantize` = {quantize!r} with `--format gguf`: expected one of {', '.join(QUANTIZE)}."
        )


def _check_llama(model) -> None:
    config = model.config
    if type(model).__name__ != "LlamaForCausalLM":
        raise ConfigError(
            f"GGUF export supports LLaMA-architecture causal LMs; this model is a {type(model).__name__}."
        )
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ConfigError(f"GGUF export does not write rope scaling; this model uses {scaling}.")


def _tensor(data: np.ndarray, quantize: str):
    """(array, GGML type) as llama.cpp's converter stores it: 1-D tensors (norms, biases) in F32, matrices in
    F16, or Q8_0 where rows split into whole 32-value blocks."""
    import gguf

    T = gguf.GGMLQuantizationType
    if data.ndim == 1:
        return data.astype(np.float32), T.F32
    if quantize == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return gguf.quants.quantize(data.astype(np.float32), T.Q8_0), T.Q8_0
    return data.astype(np.float16), T.F16


def export_gguf(model, tokenizer, out: Path, quantize: str = "f16", name: str = "trainforge model") -> Path:
    """Write `out/model.gguf` from a LLaMA causal LM (adapters already merged) with the SmolLM2 tokenizer."""
    import gguf

    _check_quantize(quantize)
    _check_llama(model)
    config = model.config
    token_fields = _tokenizer_metadata(tokenizer)
    n_tokens = len(token_fields["tokenizer.ggml.tokens"][0])
    if config.vocab_size != n_tokens:
        raise ConfigError(
            f"The model's embedding has {config.vocab_size} rows but its tokenizer has {n_tokens} "
            "tokens; llama.cpp needs them equal."
        )
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    with atomic_dir(Path(out)) as tmp:
        writer = gguf.GGUFWriter(tmp / GGUF_FILE, "llama")
        writer.add_name(name)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]))
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(head_dim)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, (value, vtype, sub_type) in token_fields.items():
            if key != "tokenizer.chat_template":
                writer.add_key_value(key, value, vtype, sub_type)
        # the template the run trained with (`data.template` may differ from SmolLM2's): llama.cpp, llama-cpp-python
        # and Ollama (without a TEMPLATE) render chats with it
        if tokenizer.chat_template:
            writer.add_chat_template(tokenizer.chat_template)
        for key, tensor in model.state_dict().items():
            if key == "lm_head.weight" and config.tie_word_embeddings:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            target = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ConfigError(f"GGUF export: no llama.cpp name for tensor {key!r} of this model.")
            data = tensor.detach().float().cpu().numpy()
            if ".attn_q." in target:
                data = _permute_rope(data, n_head)
            elif ".attn_k." in target:
                data = _permute_rope(data, n_kv)
            array, kind = _tensor(data, quantize)
            writer.add_tensor(target, array, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        (tmp / "export.json").write_text(json.dumps({"format": "gguf", "quantize": quantize, "file": GGUF_FILE}))
    return Path(out) / GGUF_FILE


def export_run_gguf(run: RunDir, quantize: str | None = None, out: Path | None = None) -> Path:
    """`<run>/export-gguf-<f16|q8_0>/model.gguf` (or under `out`) with an Ollama Modelfile and a model card beside
    it; LoRA adapters are merged in first."""
    from trainforge.config import load_config
    from trainforge.export.card import write_card
    from trainforge.export.ollama import write_modelfile
    from trainforge.export.quantize import run_model

    quantize = quantize or "f16"
    _check_quantize(quantize)  # before loading anything
    model, tokenizer, _ = run_model(run)
    target = Path(out) if out else run.path / f"export-gguf-{quantize}"
    path = export_gguf(model, tokenizer, target, quantize, name=run.name)
    write_modelfile(target, path.name, tokenizer, load_config(run.file("config.yaml")))
    write_card(run, target, "gguf")
    return path


SERVED_FOLDER = "export-gguf-f16"  # `serve --backend llama.cpp` keeps the run's GGUF here (as `export --format gguf`)
VIRTUAL_TOKEN_METHODS = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}


def cached_run_gguf(run: RunDir, log) -> Path:
    """The run's F16 GGUF for llama.cpp, exported now if it is missing or older than the run's weights."""
    from trainforge.errors import RunError
    from trainforge.inference import run_artifact

    artifact = run_artifact(run)
    peft_type = None
    if (artifact / "adapter_config.json").is_file():
        peft_type = json.loads((artifact / "adapter_config.json").read_text()).get("peft_type")
    if peft_type in VIRTUAL_TOKEN_METHODS:
        raise RunError(
            f"Run {run.path} is {peft_type.lower().replace('_', '-')}d: its virtual tokens cannot be merged into "
            "weights, and llama.cpp serves merged weights only. Serve it with `--backend torch`."
        )
    gguf = run.path / SERVED_FOLDER / GGUF_FILE
    newest_weights = max(f.stat().st_mtime for f in artifact.rglob("*") if f.is_file())
    if gguf.is_file() and gguf.stat().st_mtime >= newest_weights:
        log.info("llama.cpp serves %s", gguf)
    else:
        log.info("exporting the run to GGUF for llama.cpp (first use; kept in %s)", gguf.parent)
        export_run_gguf(run, "f16", gguf.parent)
    return gguf

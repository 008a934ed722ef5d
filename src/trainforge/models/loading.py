"""Load tokenizers and models from resolved folders, with clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

from trainforge.errors import ModelError
from trainforge.models.registry import resolve_model


def load_tokenizer(name: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear message
        raise ModelError(f"Could not load the tokenizer of model {name!r} from {path}: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(name: str, quantization_config=None, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    kwargs = {"dtype": dtype or torch.float32}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map="cpu" if not torch.cuda.is_available() else "auto")
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"Could not load causal LM {name!r} from {path}: {type(err).__name__}: {err}") from None


def is_adapter_folder(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()

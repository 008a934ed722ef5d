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


def load_language_model(name: str, objective: str, quantization_config=None, dtype=None):
    """The model class an objective trains: a masked LM for `mlm`, else a causal LM."""
    if objective == "mlm":
        from transformers import AutoModelForMaskedLM

        return _load(AutoModelForMaskedLM, "masked LM", name, None, dtype)
    return load_causal_lm(name, quantization_config, dtype)


def load_causal_lm(name: str, quantization_config=None, dtype=None):
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, "causal LM", name, quantization_config, dtype)


def _load(auto_class, kind: str, name: str, quantization_config, dtype):
    import torch

    path = resolve_model(name)
    kwargs = {"dtype": dtype or torch.float32}
    if quantization_config is not None:
        kwargs.update(
            quantization_config=quantization_config, device_map="cpu" if not torch.cuda.is_available() else "auto"
        )
    try:
        return from_pretrained_noting_new_weights(auto_class, path, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ModelError(
            f"Could not load {name!r} from {path} as a {kind}: {weights_problem(Path(path)) or ''}"
            f"{type(err).__name__}: {err}"
        ) from None


def weights_problem(folder: Path) -> str | None:
    """A sentence naming the missing or cut-short weight file of a local model folder, else None."""
    from trainforge.tracking.rundir import safetensors_problem

    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        return "the folder holds no weight file (*.safetensors or *.bin). "
    for path in files:
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return f"weight file {path} is corrupt or cut short ({problem}); copy it again. "
    return None


def from_pretrained_noting_new_weights(auto_class, path, **kwargs):
    """`from_pretrained`, with transformers' multi-line load report replaced by one line naming the freshly
    initialized modules (a new task head is expected; anything else is worth noticing)."""
    from rich.console import Console
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
    modules = {key.rsplit(".", 1)[0] for key in info.get("missing_keys", [])}
    new = sorted(m for m in modules if not any(m.startswith(f"{other}.") for other in modules))
    if new:
        Console(stderr=True).print(f"[bold]model:[/] new, untrained weights (not in {path}): {', '.join(new)}")
    return model


def is_adapter_folder(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()

"""Load tokenizers and models from resolved folders, with clear errors for broken files."""

from __future__ import annotations

import json
from pathlib import Path

from trainforge.errors import ModelError
from trainforge.models.registry import resolve_model

COPY_AGAIN = "copy it again from where it came from, or, if a training run saved it, train the run again"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft reads the first one present


def load_tokenizer(name: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear message
        problem = tokenizer_problem(Path(path))
        cause = f"{problem}; {COPY_AGAIN}." if problem else brief(err)
        raise ModelError(f"Could not load the tokenizer of model {name!r} from {path}: {cause}") from None
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
        raise load_failure(name, path, kind, err) from None


def load_failure(name: str, path, kind: str, err: Exception) -> ModelError:
    """The error for a failed `from_pretrained` of a model folder: a damaged config.json or weight file is named
    first, since the library's own message often does not say which file is at fault."""
    folder = Path(path)
    if (folder / "config.json").is_file() and (problem := json_problem(folder / "config.json")):
        return ModelError(f"Could not load {name!r} from {path} as a {kind}: {problem}; {COPY_AGAIN}.")
    return ModelError(f"Could not load {name!r} from {path} as a {kind}: {weights_problem(folder) or ''}{brief(err)}")


def brief(err: Exception) -> str:
    """A library error on one line (the CLI prints one paragraph), cut to a readable length."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:500] + ' …' if len(text) > 500 else text}"


def json_problem(path: Path) -> str | None:
    """Why a JSON file cannot be read (missing, unreadable, cut short), else None."""
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, ValueError) as err:
        return f"{path} is not readable JSON, probably cut short ({err})"
    return None


def tokenizer_problem(folder: Path) -> str | None:
    """Which tokenizer file of a local folder is damaged or missing, else None."""
    if not folder.is_dir():
        return None
    for name in ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json"):
        if (folder / name).is_file() and (problem := json_problem(folder / name)):
            return problem
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")):
        return f"{folder} holds no tokenizer file (tokenizer.json, tokenizer.model or vocab.*)"
    return None


def weights_problem(folder: Path) -> str | None:
    """A sentence naming the missing or cut-short weight file of a local model folder, else None."""
    from trainforge.tracking.rundir import safetensors_problem

    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        return f"the folder holds no weight file (*.safetensors or *.bin); {COPY_AGAIN}. "
    for path in files:
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return f"weight file {path} is corrupt or cut short ({problem}); {COPY_AGAIN}. "
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
    return (Path(path) / ADAPTER_CONFIG).is_file()


def damaged_artifact(file: Path, problem: str) -> ModelError:
    """The error for a missing or damaged file a training run saved: names the file and says what to do."""
    return ModelError(f"{problem}: train the run again, or copy {file} again from where it was trained.")


def read_artifact_json(path: Path):
    """A JSON file a run saved (labels, adapter config), or a ModelError naming it when missing or cut short."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise damaged_artifact(path, json_problem(path) or f"{path} cannot be read") from None


def check_peft_adapter(folder: Path) -> None:
    """Raise a ModelError naming the file when a peft adapter folder is missing, or its config or weights are."""
    from trainforge.tracking.rundir import safetensors_problem

    folder = Path(folder)
    if not folder.is_dir():
        raise damaged_artifact(folder, f"Adapter folder {folder} is missing")
    if not isinstance(read_artifact_json(folder / ADAPTER_CONFIG), dict):
        raise damaged_artifact(folder / ADAPTER_CONFIG, f"{folder / ADAPTER_CONFIG} is not an adapter config")
    weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise damaged_artifact(
            folder / ADAPTER_WEIGHTS[0],
            f"Adapter folder {folder} holds no weight file ({' or '.join(ADAPTER_WEIGHTS)})",
        )
    if weights.suffix == ".safetensors" and (problem := safetensors_problem(weights)):
        raise damaged_artifact(weights, f"Adapter weight file {weights} is corrupt or cut short ({problem})")


def load_peft_adapter(folder: Path, load_base, **kwargs):
    """`PeftModel.from_pretrained` of a run's adapter onto the model `load_base()` returns. The base is loaded only
    once the adapter's files check out: a big base takes minutes, and a damaged adapter should fail at once."""
    from peft import PeftModel

    folder = Path(folder)
    check_peft_adapter(folder)
    base = load_base()
    try:
        return PeftModel.from_pretrained(base, folder, **kwargs)
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear message
        raise ModelError(
            f"Could not load the adapter in {folder} onto its base model ({brief(err)}). If a file of it is damaged, "
            f"train the run again, or copy {folder} again from where it was trained."
        ) from None

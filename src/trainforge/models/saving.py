"""Save model folders that load the same under transformers 4.x (still pinned by many serving stacks) as under 5.x.

transformers 5 names its generic tokenizer class `TokenizersBackend`, which 4.x does not have (the tokenizer then
fails to load), and keeps the RoPE settings only in `rope_parameters`, which 4.x ignores: it falls back to its default
theta and silently gives different answers. The savers here write what 4.x reads beside what 5.x reads."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

# transformers 5's generic tokenizer class → the 4.x class that loads the same tokenizer.json
TOKENIZER_CLASS_4X = {"TokenizersBackend": "PreTrainedTokenizerFast"}
NO_4X_TOKENIZER = ("SentencePieceBackend", "PythonBackend")  # 5.x generic classes 4.x has no counterpart of


def save_model(model, out: Path) -> None:
    """`model.save_pretrained(out)`, its config.json readable by transformers 4.x too (see `portable_config`)."""
    model.save_pretrained(out)
    if (Path(out) / "config.json").is_file():  # a peft model saves its adapter_config.json only
        portable_config(Path(out))


def save_tokenizer(tokenizer, out: Path) -> None:
    """`tokenizer.save_pretrained(out)`, naming a tokenizer class transformers 4.x and 5.x both load."""
    tokenizer.save_pretrained(out)
    path = Path(out) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    name = config.get("tokenizer_class")
    if name in NO_4X_TOKENIZER:
        _warn(f"{path}: tokenizer class {name} has no transformers 4.x counterpart; 4.x may not load it.")
    if name in TOKENIZER_CLASS_4X:
        config["tokenizer_class"] = TOKENIZER_CLASS_4X[name]
        # 4.x's generic class would also return token_type_ids by default, which a decoder's generate() refuses
        config["model_input_names"] = list(tokenizer.model_input_names)
    for key in ("is_local", "local_files_only"):  # how this machine loaded it (offline), not part of the tokenizer
        config.pop(key, None)
    _write_json(path, config)


def portable_config(folder: Path) -> None:
    """Write transformers 4.x's RoPE keys (`rope_theta`; `rope_scaling` for a scaled RoPE; `partial_rotary_factor`)
    beside the `rope_parameters` of the config.json in `folder`. 5.x reads them back to the same parameters."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or not rope:
        return  # no RoPE (an encoder with absolute positions)
    if any(isinstance(value, dict) for value in rope.values()):
        _warn(
            f"{path}: RoPE parameters per layer type ({', '.join(rope)}) have no transformers 4.x form; 4.x may load "
            "this model with other RoPE settings."
        )
        return
    config["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {key: value for key, value in rope.items() if key != "rope_theta"}
    if "partial_rotary_factor" in rope:
        config["partial_rotary_factor"] = rope["partial_rotary_factor"]
    _write_json(path, config)


def name_public_base(adapter: Path, base_model: str) -> None:
    """Name a saved peft adapter's base by `base_model` (a name other machines know, see `registry.public_name`)
    instead of the local folder peft recorded: in adapter_config.json (what `AutoPeftModel` loads the base from, and
    the tokenizer prompt tuning embedded its init text with) and in the model card, which replaces peft's template
    (its tags kept). peft keeps the local folder while it trains and saves, so its own checks of the base read this
    machine's copy, not the Hub."""
    from huggingface_hub import ModelCard

    path = Path(adapter) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if not config.get("base_model_name_or_path"):
        return  # a base built from a config (no weights loaded) has no name to give
    config["base_model_name_or_path"] = base_model
    if config.get("tokenizer_name_or_path"):
        config["tokenizer_name_or_path"] = base_model
    _write_json(path, config)
    readme = Path(adapter) / "README.md"
    if readme.is_file():
        peft_card = ModelCard.load(readme).data
        tags = [t for t in peft_card.tags or [] if not t.startswith("base_model:adapter:")]  # names the local folder
        write_model_card(adapter, base_model, "peft", tags, pipeline_tag=peft_card.pipeline_tag)


def write_model_card(
    out: Path, base_model: str | None, library_name: str | None, tags: list[str], body: str | None = None, **metadata
) -> Path:
    """`out/README.md`, the one writer of model cards: the Hub's metadata as YAML front matter (`base_model` and how
    this model derives from it, `library_name`, `tags` after `trainforge` (and, as peft tags an adapter, its base),
    then `metadata` without its None values), then `body`, by default a line naming the base and how to get the
    full card (export/card.py writes that one: it needs the finished run)."""
    import yaml

    front = {"base_model": base_model, "base_model_relation": None, "library_name": library_name}
    if base_model:  # a model trained from scratch derives from none
        front["base_model_relation"] = "adapter" if library_name == "peft" else "finetune"
    adapter_of = [f"base_model:adapter:{base_model}"] if base_model and library_name == "peft" else []
    front["tags"] = list(dict.fromkeys(["trainforge", *tags, *adapter_of]))
    front.update(metadata)
    front = {key: value for key, value in front.items() if value is not None}
    if body is None:
        origin = f"Fine-tuned from `{base_model}`" if base_model else "Trained from scratch"
        body = (
            f"{origin} with trainforge. `trainforge export RUN` writes the full model card here: the training data, "
            "the scores before and after training, the training config and how to load the model.\n"
        )
    path = Path(out) / "README.md"
    path.write_text(f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n{body}", encoding="utf-8")
    return path


def card_tags(config) -> list[str]:
    """A run's model as Hub tags: its method and, for a language model, its training objective."""
    return [config.method.name, *([config.training.objective] if config.task == "lm" else [])]


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _warn(message: str) -> None:
    Console(stderr=True).print(f"[bold]warning:[/] {message}")

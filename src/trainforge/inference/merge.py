"""Merge a run's LoRA adapter into its base model: a plain transformers folder."""

from __future__ import annotations

from pathlib import Path

from trainforge.config import load_config
from trainforge.errors import RunError
from trainforge.inference import load_run_model
from trainforge.models.loading import check_peft_adapter
from trainforge.models.registry import public_name
from trainforge.models.saving import card_tags, save_model, save_tokenizer, write_model_card
from trainforge.tracking.rundir import RunDir, atomic_dir

# peft adapters that add virtual tokens instead of changing weights: nothing to fold into the base model
PROMPT_LEARNING = {"PREFIX_TUNING": "prefix tuning", "PROMPT_TUNING": "prompt tuning", "P_TUNING": "p-tuning"}


def unmergeable_adapter(adapter: Path) -> None:
    """Raise RunError for a prompt-learning adapter (prefix / prompt tuning), which peft cannot merge."""
    import json

    config_file = adapter / "adapter_config.json"
    peft_type = json.loads(config_file.read_text()).get("peft_type") if config_file.is_file() else None
    if peft_type in PROMPT_LEARNING:
        raise RunError(
            f"Run {adapter.parent} trained {PROMPT_LEARNING[peft_type]}: its adapter adds virtual tokens "
            "rather than changing weights, so there is nothing to merge into the base model. Load it "
            f"with peft.PeftModel.from_pretrained(base, {str(adapter)!r}) instead."
        )


def merge_run(run: RunDir, out: Path | None = None) -> Path:
    if not (run.path / "adapter").is_dir():
        raise RunError(
            f"Run {run.path} has no adapter to merge (its method saved a whole model in {run.path / 'model'})."
        )
    check_peft_adapter(run.path / "adapter")  # a damaged adapter is named before its config is read here
    unmergeable_adapter(run.path / "adapter")
    model, tokenizer = load_run_model(run)
    merged = model.merge_and_unload()
    target = out or run.path / "merged"
    with atomic_dir(Path(target)) as tmp:
        save_model(merged, tmp)
        save_tokenizer(tokenizer, tmp)
        config = load_config(run.file("config.yaml"))
        write_model_card(tmp, public_name(config.model.name), "transformers", card_tags(config))
    return Path(target)

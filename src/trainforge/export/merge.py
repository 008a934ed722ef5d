"""Merge a run's LoRA adapter into its base model: a plain transformers folder."""

from __future__ import annotations

from pathlib import Path

from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir, atomic_dir


def merge_run(run: RunDir, out: Path | None = None) -> Path:
    from trainforge.inference import load_run_model

    if not (run.path / "adapter").is_dir():
        raise RunError(f"Run {run.path} has no adapter to merge (its method saved a whole model in {run.path / 'model'}).")
    model, tokenizer = load_run_model(run)
    merged = model.merge_and_unload()
    target = out or run.path / "merged"
    with atomic_dir(Path(target)) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(target)

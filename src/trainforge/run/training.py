"""The steps of a Trainer-based run between opening its directory and finishing it: the untrained model's scores
(kept across resumes), and method.prepare → a resumable Trainer → the artifact saved atomically."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from transformers.trainer_utils import TrainOutput

from trainforge import distributed
from trainforge.checkpoints import latest_checkpoint
from trainforge.config import RunConfig
from trainforge.errors import RunError
from trainforge.methods.preference import trainer_wraps_adapter
from trainforge.methods.training_args import configure_optimizer, count_parameters, optimizer_state_bytes
from trainforge.run.prepare import Prepared
from trainforge.tracking.callbacks import FiniteLossGuard, MetricsLogger, ShareCheckpoints
from trainforge.tracking.faults import resource_errors
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json, read_json

console = Console(stderr=True)


def baseline_scores(run: RunDir, config: RunConfig, evaluate) -> dict:
    """Scores of the untrained model (`evaluate()` → (scores, samples)), kept in eval_before.json across resumes."""
    if not config.evaluation.before_after or not distributed.is_main():
        return {}
    before_file = run.file("eval_before.json")
    if before_file.is_file():
        return read_json(before_file)["scores"]
    before, samples = evaluate()
    atomic_write_json(before_file, {"scores": before, "samples": samples})
    return before


def train_and_save(
    model, prep: Prepared, run: RunDir, build_trainer, callbacks: list | None, resume: bool
) -> tuple[object, dict]:
    """method.prepare → a resumable Trainer → the artifact saved atomically. Returns the trained model and the
    training part of the run summary."""
    config = prep.config
    if not trainer_wraps_adapter(config, prep.method):
        model = prep.method.prepare(model, prep.train_rows)
    logger = [MetricsLogger(run), ShareCheckpoints(run)] if distributed.is_main() else []
    trainer = build_trainer(model, prep, run, [*logger, FiniteLossGuard(), *(callbacks or [])])
    configure_optimizer(trainer, config)
    trainable, total = report_parameters(trainer.model, config.method.name)
    checkpoint = resume_checkpoint(run, resume)
    started = time.perf_counter()
    with resource_errors(run, config.training):
        finished = finished_state(checkpoint) if checkpoint else None
        if finished:  # its weights are the trained ones: load them rather than train a step past the end
            trainer._load_from_checkpoint(str(checkpoint))
            losses = [entry["loss"] for entry in finished.get("log_history", []) if "loss" in entry]
            result = TrainOutput(finished["global_step"], sum(losses) / max(len(losses), 1), {})
        else:
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        train_seconds = time.perf_counter() - started
        target = run.path / ("adapter" if prep.method.saves_adapter else "model")
        if distributed.sharding():
            distributed.save_gathered(trainer, target)
        if not distributed.is_main():
            return trainer.model, {}
        if not distributed.sharding():
            with atomic_dir(target) as tmp:
                prep.method.save(trainer.model, prep.tokenizer, tmp)
                refuse_non_finite_weights(tmp, result.global_step)
    return trainer.model, {
        "method": config.method.name,
        "model": config.model.name,
        "steps": result.global_step,
        "train_loss": round(result.training_loss, 4),
        "train_seconds": round(train_seconds, 1),
        "trainable_params": trainable,
        "total_params": total,
        "optimizer_state_bytes": optimizer_state_bytes(trainer.optimizer),
        "precision": config.training.precision,
    }


def finished_state(checkpoint: Path) -> dict | None:
    """The trainer state of a checkpoint saved at the last step, else None. Resumed from there, the Trainer would
    train one step past the end (transformers 5 checks for the end only after a step), e.g. after a kill while the
    run was being recorded."""
    state = read_json(checkpoint / "trainer_state.json")
    return state if state.get("max_steps") and state.get("global_step", 0) >= state["max_steps"] else None


def refuse_non_finite_weights(folder: Path, step: int) -> None:
    """A run never ends `completed` with broken weights: each saved tensor is read back (one at a time) and checked,
    and the artifact is not kept when one holds NaN or infinity."""
    import torch
    from safetensors import safe_open

    broken = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = weights.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    broken.append(key)
    if broken:
        raise RunError(
            f"The weights trained to step {step} hold NaN or infinite values ({len(broken)} tensors, e.g. "
            f"{broken[0]}), so they are not saved. Lower `training.learning_rate`, or train in fp32 "
            "(`training.precision: fp32`)."
        )


def report_parameters(model, method: str) -> tuple[int, int]:
    trainable, total = count_parameters(model)
    console.print(
        f"[bold]method:[/] {method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.3g}%)"
    )
    return trainable, total


def resume_checkpoint(run: RunDir, resume: bool) -> Path | None:
    """The last complete checkpoint to resume from (metrics.jsonl rewound to it), or None for a fresh start."""
    return latest_checkpoint(run) if resume else None

"""Checkpoints of the hand-written PyTorch loops (trainforge.nn's engine, task gan, task rl-agent, PPO), one layout:

    checkpoints/checkpoint-<step>/  model.safetensors   the weights
                                    state.pt            everything else (optimizer, RNG states, progress), tensors and
                                                        plain Python only, so torch's safe loader reads it
                                    trainer_state.json  {"global_step": step, ...}, written last

Everything is saved as CPU tensors and loaded onto the CPU (the caller's `load_state_dict` puts it where its
model is), so a run trained on a GPU resumes, or is used, on a machine without one and the other way round.

Folders are written atomically, so `RunDir.last_checkpoint` (shared with the Trainer's checkpoints) finds the newest
complete one after a crash."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from trainforge.hardware import to_device
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json

console = Console(stderr=True)
STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.safetensors"


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def cpu_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as CPU copies (contiguous, sharing no storage), as safetensors saves them: a GPU-trained network
    loads anywhere."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}


def save_checkpoint(
    run: RunDir,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict,
    keep: int | None = None,
    meta: dict | None = None,
) -> None:
    """checkpoints/checkpoint-<step>/ written atomically (`meta` goes into trainer_state.json); with `keep`, only
    the newest `keep` checkpoints stay."""
    from safetensors.torch import save_file

    with atomic_dir(run.checkpoints / f"checkpoint-{step}") as tmp:
        save_file(cpu_weights(weights), str(tmp / WEIGHTS_FILE))
        torch.save(to_device(state, "cpu"), tmp / STATE_FILE)
        atomic_write_json(tmp / "trainer_state.json", {**(meta or {}), "global_step": step})
    if keep:
        for old in sorted(run.checkpoints.glob("checkpoint-*"), key=checkpoint_step)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint (incomplete newer ones are reported and passed over), with metrics.jsonl
    rewound to its step; None (metrics rewound to the start) when there is none."""

    def skip(folder: Path, problem: str) -> None:
        console.print(f"[bold yellow]warning:[/] checkpoint {folder} is incomplete ({problem}); skipping it")

    folder = run.last_checkpoint(on_skip=skip)
    console.print(f"[bold]resuming[/] from {folder or 'the start (no complete checkpoint yet)'}")
    run.rewind_metrics(checkpoint_step(folder) if folder else 0)
    return folder


def load_checkpoint(run: RunDir) -> tuple[int, dict] | None:
    """(step, state) of the newest complete checkpoint (metrics rewound to it), or None."""
    folder = latest_checkpoint(run)
    if folder is None:
        return None
    return checkpoint_step(folder), torch.load(folder / STATE_FILE, weights_only=True, map_location="cpu")


def load_weights(run: RunDir, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run.checkpoints / f"checkpoint-{step}" / WEIGHTS_FILE), device="cpu")


def rng_states() -> dict:
    """The global torch (and CUDA) / numpy / python RNG states, in types `torch.load(weights_only=True)` reads."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, key.tolist(), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

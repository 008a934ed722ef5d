"""What the hand-written PyTorch loops (task gan, task rl-agent) share: the run directory opened or resumed,
and checkpoints that `RunDir.last_checkpoint` recognises (trainer_state.json + weights + a torch state archive)."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import numpy as np

import torch
from torch import nn

from trainforge.config import RunConfig
from trainforge.nn.models import linear_stack
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json

STATE_FILE = "state.pt"


def open_loop_run(config: RunConfig, resume: bool, kind: str) -> tuple[RunConfig, RunDir]:
    """The run directory, named `<kind>-<time>` unless `name` is set (or the unfinished run, with resume)."""
    from trainforge.pipeline import open_run

    if not config.name and not resume:
        config = config.model_copy(update={"name": f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"})
    return open_run(config, resume, kind)


def save_checkpoint(run: RunDir, step: int, weights: dict[str, torch.Tensor], state: dict,
                    keep: int | None = None) -> None:
    """checkpoints/checkpoint-<step>/: the weights (safetensors), the full training state, written atomically;
    with `keep`, only the newest `keep` checkpoints stay."""
    from safetensors.torch import save_file

    with atomic_dir(run.checkpoints / f"checkpoint-{step}") as tmp:
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(state, tmp / STATE_FILE)
        atomic_write_json(tmp / "trainer_state.json", {"global_step": step})
    if keep:
        found = sorted(run.checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        for old in found[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def rng_states() -> dict:
    """The global torch (and CUDA) / numpy / python RNG states, in types `torch.load(weights_only=True)` reads."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, key.tolist(), pos, has_gauss, gauss],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(run: RunDir) -> tuple[int, dict] | None:
    """(step, state) of the newest complete checkpoint (metrics rewound to it), or None."""
    from trainforge.pipeline import resume_checkpoint

    folder = resume_checkpoint(run, True)
    if folder is None:
        return None
    return int(folder.name.rsplit("-", 1)[1]), torch.load(folder / STATE_FILE, weights_only=True)


def save_network(folder: Path, net: nn.Module, meta: dict) -> None:
    """A network as model.safetensors + config.json (what rebuilds it), in one atomic folder."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file(net.state_dict(), str(tmp / "model.safetensors"))
        atomic_write_json(tmp / "config.json", meta)


def load_network(folder: Path) -> tuple[nn.Sequential, dict]:
    from safetensors.torch import load_file

    from trainforge.tracking.rundir import read_json

    meta = read_json(folder / "config.json")
    net = linear_stack(meta["sizes"])
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval(), meta

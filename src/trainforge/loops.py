"""What the hand-written PyTorch loops (task gan, task rl-agent) share: the run directory opened or resumed, and
networks saved as safetensors + JSON (CPU tensors; loaded onto `hardware.pick_device()`). Checkpoints live in
trainforge.checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from trainforge.checkpoints import cpu_weights
from trainforge.config import RunConfig
from trainforge.hardware import pick_device
from trainforge.nn.models import linear_stack
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json


def open_loop_run(config: RunConfig, resume: bool, kind: str) -> tuple[RunConfig, RunDir]:
    """The run directory, named `<kind>-<time>` unless `name` is set (or the unfinished run, with resume)."""
    from trainforge.pipeline import open_run

    if not config.name and not resume:
        config = config.model_copy(update={"name": f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"})
    return open_run(config, resume, kind)


def save_network(folder: Path, net: nn.Module, meta: dict) -> None:
    """A network as model.safetensors + config.json (what rebuilds it), in one atomic folder."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file(cpu_weights(net.state_dict()), str(tmp / "model.safetensors"))
        atomic_write_json(tmp / "config.json", meta)


def load_network(folder: Path) -> tuple[nn.Sequential, dict]:
    from safetensors.torch import load_file

    from trainforge.tracking.rundir import read_json

    meta = read_json(folder / "config.json")
    net = linear_stack(meta["sizes"])
    net.load_state_dict(load_file(str(folder / "model.safetensors"), device="cpu"))
    return net.to(pick_device()).eval(), meta

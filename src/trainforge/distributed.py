"""Data-parallel training on existing engines. `trainforge train --nproc N` starts N processes with
torch.distributed.run (torchrun); `accelerate launch` or a torchrun of one's own does the same job. Each process
reads RANK / WORLD_SIZE from its environment, and the HF Trainer (through accelerate) wraps the model in DDP —
gloo on CPU, NCCL on GPUs — or FSDP / DeepSpeed when an accelerate config asks for them.

Rank 0 owns the run directory: it picks the run name, writes metrics, evaluation, the saved model, the report and
the MLflow run. The other ranks train into the same checkpoints folder (the Trainer writes each rank's RNG state
there, which resuming needs) and stop after the training loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from trainforge.errors import ConfigError, RunError, TrainforgeError
from trainforge.tracking.rundir import RunDir


def sharding() -> bool:
    """Launched with an accelerate config for FSDP or DeepSpeed: weights (ZeRO-3 / FSDP) or optimizer state
    (ZeRO-1/2) live in pieces on the ranks. accelerate turns FSDP on only where there is an accelerator: on CPUs
    an FSDP config trains plain DDP over gloo, a whole model on each rank."""
    import torch

    def asked(key: str) -> bool:
        return os.environ.get(key, "").lower() == "true"

    return asked("ACCELERATE_USE_DEEPSPEED") or (asked("ACCELERATE_USE_FSDP") and torch.accelerator.is_available())


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def refuse_stages(path) -> None:
    raise ConfigError(
        f"{path}: a config with `stages:` runs in one process; train its stages one by one with --nproc instead."
    )


class FollowerRun(RunDir):
    """The run directory as ranks other than 0 see it: same paths, no writes (rank 0 records the run)."""

    def set_status(self, status: str, **fields: Any) -> None:
        pass

    def append_metrics(self, row: dict[str, Any]) -> None:
        pass

    def rewind_metrics(self, step: int) -> None:
        pass


def _broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank; sets up the process group the Trainer will then use."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())
    return broadcast_object_list([value], from_process=0)[0]


def open_on_rank0(open_run: Callable[[], tuple[Any, RunDir]]) -> tuple[Any, RunDir]:
    """`open_run()` on rank 0; the other ranks get its config (with the run name) and a FollowerRun of its
    directory, or fail with rank 0's error instead of waiting for a run that never starts."""
    if world_size() == 1:
        return open_run()
    opened, error = None, None
    if is_main():
        try:
            opened = open_run()
        except TrainforgeError as err:
            error = err
    config, path, message = _broadcast((*opened, None) if opened else (None, None, str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise RunError(f"Rank 0 could not open the run directory: {message}")
    return (config, path) if is_main() else (config, FollowerRun(path.path))


def save_gathered(trainer, target: Path) -> None:
    """FSDP / DeepSpeed: every rank takes part in gathering the weights (the Trainer's own save, which needs
    `fsdp_state_dict_type: FULL_STATE_DICT` or ZeRO-3's `stage3_gather_16bit_weights_on_model_save`); rank 0
    writes them to a staging folder that replaces `target` once complete."""
    staging = target.parent / f".{target.name}.gathered"
    trainer.save_model(str(staging))
    if is_main():
        (staging / "training_args.bin").unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def launch(nproc: int, argv: list[str]) -> int:
    """Run `trainforge <argv>` in `nproc` local processes under torchrun; returns its exit code."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "trainforge.cli",
        *argv,
    ]
    # torchrun would give each process one thread; share the cores out instead (a user's setting still wins)
    from trainforge.hardware import physical_cores

    env = {"OMP_NUM_THREADS": str(max(1, physical_cores() // nproc)), **os.environ}
    return subprocess.call(command, env=env)

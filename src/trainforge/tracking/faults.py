"""Resource faults during training (full disk, unwritable run directory, out of memory) as one clear RunError that
says what to change, and that the last complete checkpoint is intact to resume from."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator

from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in OOM_MARKERS)


def _resume_hint(run: RunDir) -> str:
    checkpoint = run.last_checkpoint()
    if checkpoint is None:
        return "No checkpoint was complete yet; the run starts over with --resume."
    return f"The last complete checkpoint, {checkpoint}, is intact: continue from it with `trainforge train CONFIG --resume`."


@contextmanager
def resource_errors(run: RunDir, training=None) -> Iterator[None]:
    """Translate the faults of a training block; `training` is the run's TrainingConfig of a neural run (for the
    OOM advice), None for a tabular one."""
    # A tabular run keeps no checkpoints: it is simply trained again.
    hint = (lambda: _resume_hint(run)) if training is not None else (lambda: "Then train the run again.")
    try:
        yield
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        fewer_checkpoints = " (or set `training.save_total_limit` lower to keep fewer checkpoints)" if training else ""
        if err.errno in DISK_FULL:
            raise RunError(
                f"Out of disk space while writing run {run.path}{where}. Free space{fewer_checkpoints}. {hint()}"
            ) from None
        if err.errno in NOT_WRITABLE:
            raise RunError(
                f"Run directory {run.path} is not writable{where}: {err.strerror}. Make it writable (or "
                f"point `tracking.runs_dir` elsewhere). {hint()}"
            ) from None
        raise
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        if training is None:
            raise RunError(
                f"Out of memory while fitting run {run.path}. Use fewer rows or columns, or estimator "
                f"parameters that need less memory (fewer or shallower trees, fewer neighbours, a linear "
                f"kernel)."
            ) from None
        t = training
        raise RunError(
            f"Out of memory while training run {run.path} with `training.batch_size` {t.batch_size} and "
            f"`training.max_length` {t.max_length}. Lower `training.batch_size` (and raise "
            f"`training.gradient_accumulation_steps`, now {t.gradient_accumulation_steps}, to keep the same effective "
            f"batch), shorten `training.max_length`, or set `training.gradient_checkpointing: true`. "
            f"{_resume_hint(run)}"
        ) from None

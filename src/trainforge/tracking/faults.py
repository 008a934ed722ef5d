"""Resource faults during training (full disk, unwritable run directory, out of memory) as one clear RunError that
says what to change, and that the last complete checkpoint is intact to resume from."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator

from trainforge.errors import RunError, is_disk_full
from trainforge.tracking.rundir import RunDir

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


def _out_of_disk(run: RunDir, err: BaseException, training, hint) -> RunError:
    """The full-disk error, once the half-written checkpoints (which would keep the disk full) are removed."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    removed = run.remove_partial_checkpoints()
    freed = f" The half-written {', '.join(p.name for p in removed)} was removed." if removed else ""
    fewer = " (or set `training.save_total_limit` lower to keep fewer checkpoints)" if training else ""
    return RunError(f"Out of disk space while writing run {run.path}{where}.{freed} Free space{fewer}. {hint()}")


@contextmanager
def resource_errors(run: RunDir, training=None) -> Iterator[None]:
    """Translate the faults of a training block; `training` is the run's TrainingConfig of a neural run (for the
    OOM advice), None for a tabular one."""
    # A tabular run keeps no checkpoints: it is simply trained again.
    hint = (lambda: _resume_hint(run)) if training is not None else (lambda: "Then train the run again.")
    try:
        yield
    except OSError as err:
        if is_disk_full(err):
            raise _out_of_disk(run, err, training, hint) from None
        if err.errno in NOT_WRITABLE:
            where = f" ({err.filename})" if err.filename else ""
            raise RunError(
                f"Run directory {run.path} is not writable{where}: {err.strerror}. Make it writable (or "
                f"point `tracking.runs_dir` elsewhere). {hint()}"
            ) from None
        raise
    except (RuntimeError, MemoryError) as err:
        if is_disk_full(err):
            raise _out_of_disk(run, err, training, hint) from None
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
    except Exception as err:  # tokenizers' and safetensors' native code raise plain exceptions
        if is_disk_full(err):
            raise _out_of_disk(run, err, training, hint) from None
        raise

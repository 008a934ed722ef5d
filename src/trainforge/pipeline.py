"""`trainforge train` and `eval`: a config → the task the registry says handles it → that task's run, and a
finished run → its task's scores. Data-parallel launches are checked here first, against the task's and the
method's capabilities."""

from __future__ import annotations

from trainforge import distributed
from trainforge.config import RunConfig
from trainforge.errors import ConfigError, RunError
from trainforge.tasks import registry
from trainforge.tracking.rundir import RunDir


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    """Train, evaluate, save and record one run; returns its run directory."""
    entry = registry.for_config(config)
    if distributed.world_size() > 1:
        check_data_parallel(config)
    if resume and not entry.can("resume"):
        raise RunError(
            f"{entry.name} runs ({entry.summary}) hold no checkpoints and do not resume; start the run "
            "again without --resume."
        )
    return entry.load().train(config, resume=resume, callbacks=callbacks)


def evaluate_run(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Scores of a finished run on its own test split, or on every row of `data`, as its task computes them."""
    return registry.for_run(run).hook("evaluate")(run, data, **options)


def check_data_parallel(config: RunConfig, source: str = "the config") -> None:
    """Data-parallel training covers the tasks that claim it (Trainer-based language models and text classifiers)
    with methods that train a network whose weights the Trainer can gather."""
    from trainforge.methods import get_method

    entry = registry.for_config(config)
    why = None if entry.can("data-parallel") else f"task {entry.name!r} ({entry.summary}) trains in one process"
    why = why or get_method(config).data_parallel_problem()
    if why:
        able = ", ".join(e.name for e in registry.ENTRIES if e.can("data-parallel"))
        raise ConfigError(
            f"Data-parallel training (--nproc, or a torchrun / accelerate launch) of {source}: {why}. It "
            f"covers the tasks {able} with a method that trains a network; run this config in one "
            "process."
        )

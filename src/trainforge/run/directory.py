"""A run's directory: opened under its name (default `<stem>-<time>`), or the unfinished run of the same config
found again for --resume. `kind` (the task registry entry, or the application, that made the run) is recorded in
run.json, so commands that use a finished run know what it is without guessing from its files; so is, for a run
that reads data, which data it trains on (data/versioning.py). The run's trackers (`tracking.report_to`) start
here, for every task alike."""

from __future__ import annotations

import json
import os
import time

from rich.console import Console

from trainforge import distributed
from trainforge.config import RunConfig, dump_config, load_config
from trainforge.data.versioning import ROW_IDS_FILE, DataVersion
from trainforge.errors import RunError
from trainforge.tracking.registry import data_differences, described_differences
from trainforge.tracking.rundir import RunDir, atomic_write_text, list_runs
from trainforge.tracking.trackers import Trackers, check_installed


def default_name(stem: str) -> str:
    """`<stem>-<time>`; runs started in the same second get `-2`, `-3`, ... (RunDir.claim)."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_run(
    config: RunConfig, resume: bool, kind: str, stem: str, data: DataVersion | None = None
) -> tuple[RunConfig, RunDir]:
    """A new run directory named `name` (default `<stem>-<time>`), or the unfinished run to resume, with the
    `data` it trains on recorded (`record_data`) and its trackers started; the config returned carries the run's
    name. Under data-parallel training rank 0 opens it and the other ranks follow."""
    return distributed.open_on_rank0(lambda: _open(config, resume, kind, stem, data))


def _open(config: RunConfig, resume: bool, kind: str, stem: str, data: DataVersion | None) -> tuple[RunConfig, RunDir]:
    check_installed(config.tracking.report_to)  # before a run directory exists
    if resume:
        run = open_for_resume(config)
        config = config.model_copy(update={"name": run.name})
        run.set_status("running", resumed=time.time())
        for path, why in run.remove_leftovers().items():  # what the stopped process left half-written
            Console(stderr=True).print(f"[bold yellow]warning:[/] {path} is incomplete ({why}); removed it")
    else:
        named = config.model_copy(update={"name": config.name or default_name(stem)})
        run = RunDir.create(config.tracking.runs_dir, named.name, dump_config(named), kind, numbered=not config.name)
        config = named.model_copy(update={"name": run.name})
        if run.name != named.name:  # a generated name another run took in the same second
            atomic_write_text(run.file("config.yaml"), dump_config(config))
    if data is not None:
        record_data(run, data)
    start_tracking(run, config, kind, resume)
    return config, run


def start_tracking(run: RunDir, config: RunConfig, kind: str, resume: bool) -> None:
    """Start the run's trackers, which its RunDir then feeds; `resume`: continue their records of the run (also
    for a run a later process continues without `open_run`, an interactive active-learning run given its labels).
    A run whose trackers cannot start ends `failed` before anything trains."""
    try:
        run.trackers = Trackers.open(run, config, kind, resume)
    except Exception as err:
        run.record_end("failed", str(err))
        raise


def record_data(run: RunDir, data: DataVersion) -> None:
    """run.json's `data` block (each split's fingerprint and row count) and the splits' row ids in their own file;
    a resumed run whose data changed since it started says so, and records the data it goes on with."""
    started_on = (run.info().get("data") or {}).get("fingerprints")
    changed = data_differences(started_on, data.fingerprints) if started_on else []
    if changed:
        Console(stderr=True).print(
            f"[bold yellow]warning:[/] the data differs from what run {run.name} started on (started vs now): "
            f"{described_differences(changed)}; it goes on with the data as it is now, and records that.",
            highlight=False,
        )
    atomic_write_text(run.file(ROW_IDS_FILE), json.dumps(data.row_ids) + "\n")
    run.record(data=data.block())


def config_without_name(config: RunConfig) -> dict:
    data = config.model_dump(mode="json")
    data.pop("name", None)
    for resolved_per_machine in ("precision", "gradient_checkpointing"):  # the latter changes memory, not numbers
        data["training"].pop(resolved_per_machine, None)
    return data


def open_for_resume(config: RunConfig) -> RunDir:
    """The run named `name`, else the newest unfinished run started with this config; refused when it completed,
    still runs, or was started with another config."""
    runs_dir = config.tracking.runs_dir
    if config.name:
        candidates = [r for r in list_runs(runs_dir) if r.name == config.name]
    else:
        wanted = config_without_name(config)
        candidates = [
            r
            for r in list_runs(runs_dir)
            if r.status != "completed" and config_without_name(load_config(r.file("config.yaml"))) == wanted
        ]
    if not candidates:
        what = f"run named {config.name}" if config.name else "unfinished run with this config"
        raise RunError(f"Nothing to resume: no {what} under {runs_dir}/.")
    run = candidates[-1]
    if run.status == "completed":
        raise RunError(f"Run {run.path} already completed; there is nothing to resume.")
    if run.status == "running" and run.info().get("pid") != os.getpid():
        raise RunError(f"Run {run.path} is still running (process {run.info().get('pid')}); stop it before resuming.")
    saved = load_config(run.file("config.yaml"))
    if config_without_name(saved) != config_without_name(config.model_copy(update={"name": saved.name})):
        raise RunError(
            f"Run {run.path} was started with a different config; resume it with the config saved in "
            f"{run.file('config.yaml')}."
        )
    return run

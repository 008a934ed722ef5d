"""`trainforge tune`: one search as a run directory. config.yaml, run.json, metrics.jsonl (a row per trial),
summary.json, best.yaml (the best config, runnable with `trainforge train`), report.html, and an MLflow parent run
with one nested run per trial."""

from __future__ import annotations

import os
import shutil
import socket
import time
from datetime import datetime
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from trainforge.config import RunConfig, dump_config
from trainforge.errors import TrainforgeError
from trainforge.run.directory import open_run
from trainforge.run.finish import finish_run, fmt
from trainforge.tracking.rundir import RunDir, atomic_write_json, atomic_write_text
from trainforge.tuning.plots import history_png
from trainforge.tuning.study import (
    INTERRUPTED,
    SKIPPED,
    Plan,
    apply,
    create_study,
    objective_for,
    plan,
    retry_interrupted,
    run_workers,
)

console = Console(stderr=True)


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


def tune(config: RunConfig, workers: int = 1, worker_index: int = 0, resume: bool = False) -> RunDir:
    """Search `config`'s space; this process is worker `worker_index` (+ `workers - 1` local processes).
    `resume`: continue the unfinished tuning run of this config (after a kill or a crash) until its budget."""
    objective = objective_for(config)  # fails on a bad table before a run directory exists
    tag = f"{socket.gethostname()}:{os.getpid()}"
    stem = f"{config.model.name}-{config.task}-tune"
    runs_dir = Path(config.tracking.runs_dir)
    made_runs_dir = not runs_dir.exists()
    config, run = open_run(config, resume, "tune", stem)
    try:
        p = plan(config, config.tuning.study_name or config.name, objective)
        study = create_study(p)
    except BaseException:
        if not resume:  # nothing ran: no run to show
            shutil.rmtree(run.path)
            if made_runs_dir:
                shutil.rmtree(runs_dir, ignore_errors=True)
        raise
    if resume:
        retried = retry_interrupted(p, socket.gethostname())
        p.resumed_after = len(study.get_trials(deepcopy=False))
        console.print(
            f"[bold]resuming[/] study {p.study_name!r}: {p.resumed_after} trials so far"
            + (f", {retried} interrupted one(s) queued again" if retried else "")
        )
    run.set_status("running", workers=[*run.info().get("workers", []), tag])  # metrics.jsonl lists their trials
    console.print(
        f"[bold]tuning:[/] {config.tuning.strategy}, {p.budget} trials in study {p.study_name!r} "
        f"({p.storage}), {workers} worker(s) here, {p.direction} {p.metric}"
        + (", median pruning on intermediate scores" if config.tuning.pruning else "")
    )
    started = time.time()
    with run.failing_on_error():
        run_workers(p, workers, worker_index, tag, objective)
        summary = _record(run, p, study, tag, time.time() - started)
    _print(run, summary)
    return run


def _trial_row(t) -> dict:
    return {
        "step": t.number,
        "trial": t.number,
        "state": t.state.name.lower(),
        "score": t.value,
        "params": t.params,
        "fold_scores": t.user_attrs.get("fold_scores", []),
        "seconds": t.user_attrs.get("seconds"),
        "worker": t.user_attrs.get("worker"),
        **({"duplicate_of": t.user_attrs["duplicate_of"]} if "duplicate_of" in t.user_attrs else {}),
        **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
    }


def _record(run: RunDir, p: Plan, study, tag: str, seconds: float) -> dict:
    from optuna.trial import TrialState

    config = p.config
    every = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SKIPPED)]
    trials = [t for t in every if not t.user_attrs.get(INTERRUPTED)]
    tags = tuple(f"{t}/" for t in run.info().get("workers", [tag]))
    mine = [t for t in trials if str(t.user_attrs.get("worker", "")).startswith(tags)]
    run.rewind_metrics(-1)  # a resumed run lists the trials of all its processes once
    for t in mine:
        run.append_metrics(_trial_row(t))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    count = lambda state: sum(t.state == state for t in trials)  # noqa: E731
    summary = {
        "task": config.task,
        "model": config.model.name,
        "method": "tune",
        "strategy": config.tuning.strategy,
        "metric": p.metric,
        "direction": p.direction,
        "study": p.study_name,
        "storage": p.storage,
        "trials": len(trials),
        "trials_here": len(mine),
        "interrupted": len(every) - len(trials),
        "complete": count(TrialState.COMPLETE),
        "pruned": count(TrialState.PRUNED),
        "failed": count(TrialState.FAIL),
        "seconds": round(seconds, 2),
    }
    if not done:
        errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
        atomic_write_json(run.file("summary.json"), summary)
        raise TrainforgeError(
            f"No trial of study {p.study_name!r} completed"
            + (f"; the first error: {errors[0]}" if errors else "")
            + "."
        )
    best = study.best_trial
    best_config = apply(config, best.params).model_copy(update={"name": f"{config.name}-best"})
    best_yaml = (
        f"# Best of study {p.study_name!r} (trial {best.number}): {p.metric} {best.value:.6g}\n"
        f"# Run it with: trainforge train {run.file('best.yaml')}\n" + dump_config(best_config)
    )
    atomic_write_text(run.file("best.yaml"), best_yaml)
    summary.update(
        {
            "best_trial": best.number,
            f"best.{p.metric}": best.value,
            "best_params": best.params,
            "best_config": str(run.file("best.yaml")),
        }
    )
    ranked = sorted(
        (t for t in trials if t.value is not None), key=lambda t: t.value, reverse=p.direction == "maximize"
    )
    rows = [
        [t.number, f"{t.value:.4f}", yaml.safe_dump(t.params, default_flow_style=True, width=1000).strip()]
        for t in ranked[:10]
    ]
    finish_run(
        run,
        config,
        summary,
        figures=[("Trial history", history_png(trials, p.metric, p.direction == "maximize"))],
        tables=[("Best trials", rows, ["trial", p.metric, "params"])],
        artifacts=[run.file("best.yaml")],
        nested=_trial_runs(run, summary["metric"], mine),
    )
    return summary


def _trial_runs(run: RunDir, metric: str, trials) -> list[dict]:
    """One nested MLflow run per trial of this process."""
    children = []
    for t in trials:
        metrics = {f"fold.{i}": v for i, v in enumerate(t.user_attrs.get("fold_scores", []))}
        metrics.update({f"intermediate.{step}": v for step, v in t.intermediate_values.items()})
        if t.value is not None:
            metrics[metric] = t.value
        children.append(
            {
                "name": f"{run.name}-trial-{t.number}",
                "params": t.params,
                "metrics": metrics,
                "tags": {"trainforge.trial": str(t.number), "trainforge.state": t.state.name.lower()},
                "start": _ms(t.datetime_start),
                "end": _ms(t.datetime_complete),
                "status": "FINISHED"
                if t.state.name == "COMPLETE"
                else ("KILLED" if t.state.name == "PRUNED" else "FAILED"),
            }
        )
    return children


def _print(run: RunDir, summary: dict) -> None:
    out = Console()
    table = Table("key", "value", title=f"tuning run {run.name}")
    for key in (
        "strategy",
        "metric",
        "trials",
        "complete",
        "pruned",
        "failed",
        "seconds",
        "best_trial",
        f"best.{summary['metric']}",
        "best_params",
    ):
        if key in summary:
            table.add_row(key, fmt(summary[key]))
    out.print(table)
    out.print(f"best config: [bold]{run.file('best.yaml').resolve()}[/]  (trainforge train it)")
    out.print(f"run directory: [bold]{run.path.resolve()}[/]")

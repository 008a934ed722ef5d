"""How every run ends: summary.json, the HTML report, the end of its trackers' records (MLflow, ...) and the final
status (`finish_run`, the one place), the before/after block of runs that score the untrained model too, and the
summary printed as a table."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from trainforge.config import RunConfig
from trainforge.config.applies import applied_config
from trainforge.config.schema import TRACKERS
from trainforge.tracking.registry import FINGERPRINT
from trainforge.tracking.report import fmt
from trainforge.tracking.rundir import RunDir, atomic_write_json

# What every run's MLflow record carries (those that exist), before its task's own artifacts.
RECORDED_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "report.html", "eval_before.json", "eval_after.json")


def comparison_rows(before: dict, after: dict) -> list[list[str]]:
    return [[k, fmt(before.get(k, "—")), fmt(after.get(k, "—"))] for k in after]


def last_logged(run: RunDir, keys: tuple[str, ...]) -> dict:
    """The last training-log value of each key that was logged (e.g. DPO's rewards/margins), as `train.<key>`."""
    found = {}
    for row in run.metrics():
        found.update({f"train.{k}": round(row[k], 4) for k in keys if k in row})
    return found


def finish_run(
    run: RunDir,
    config: RunConfig,
    summary: dict,
    comparison: list[list[str]] | None = None,
    *,
    tables: list[tuple[str, list[list], list[str]]] | None = None,
    figures: list[tuple[str, bytes]] | None = None,
    artifacts: list[Path] = (),
    nested: list[dict] | None = None,
    status: str = "completed",
) -> str | None:
    """summary.json, the report (with extra `tables` and `figures` sections), the end of the trackers' records
    (the summary, the task's extra `artifacts`, files or folders, and in MLflow `nested` child runs such as tuning
    trials; tracking/trackers.py), and the status. summary.json and run.json carry `mlflow_run_id` (None when
    MLflow is off) and `<tracker>_error` for each tracker that failed. Returns the MLflow run id."""
    for recorded_at_the_end in ("mlflow_run_id", *(f"{name}_error" for name in TRACKERS)):
        summary.pop(recorded_at_the_end, None)
    # which data made the model, beside its scores (run.json's `data` block, recorded when the run opened)
    fingerprints = (run.info().get("data") or {}).get("fingerprints", {})
    summary.update({f"{FINGERPRINT}{part}": value for part, value in fingerprints.items()})
    # the MLflow run opened with the run (none: MLflow off, or a run whose trackers this process did not start)
    tracked = {"mlflow_run_id": run.trackers.mlflow_run_id if run.trackers else run.info().get("mlflow_run_id")}
    summary.update(tracked)
    atomic_write_json(run.file("summary.json"), summary)  # what the report and the trackers record
    if config.tracking.report:
        from trainforge.tracking.report import write_report

        shown = yaml.safe_dump(applied_config(config), sort_keys=False, allow_unicode=True)
        write_report(run, summary, comparison, shown, tables=tables, figures=figures)
    if run.trackers is not None:
        files = [run.file(n) for n in RECORDED_FILES]
        if (run.path / "adapter").is_dir():
            files.append(run.path / "adapter")
        tracked = run.trackers.end(summary, files + list(artifacts), nested, status)
    summary.update(tracked)
    atomic_write_json(run.file("summary.json"), summary)
    run.set_status(status, finished=time.time(), **tracked)
    return tracked["mlflow_run_id"]


def finish_with_scores(
    run: RunDir, config: RunConfig, summary: dict, before: dict, after: dict, samples: list[dict] = (), **finish: object
) -> list[list[str]] | None:
    """The close of a run that scored the untrained model too: eval_after.json, the `before.` / `after.` keys in
    the summary, then `finish_run` with the before/after table. Returns that table's rows (None without a
    baseline) for `print_summary`."""
    atomic_write_json(run.file("eval_after.json"), {"scores": after, "samples": list(samples)})
    summary.update({f"before.{k}": v for k, v in before.items()})
    summary.update({f"after.{k}": v for k, v in after.items()})
    comparison = comparison_rows(before, after) if before else None
    finish_run(run, config, summary, comparison, **finish)
    return comparison


def _shown(key: str, summary: dict) -> str | None:
    """A summary value as a table cell; None for a `.std` shown beside its `.mean`."""
    value = summary.get(key)
    if key.endswith(".std") and f"{key[:-4]}.mean" in summary:
        return None
    if key.endswith(".mean") and f"{key[:-5]}.std" in summary:
        return f"{value:.4f} ± {summary[key[:-5] + '.std']:.4f}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return " ".join(f"{v:.4f}" for v in value)
    return fmt(value)


def print_summary(
    run: RunDir,
    summary: dict,
    comparison: list[list[str]] | None = None,
    keys: tuple[str, ...] | list[str] | None = None,
) -> None:
    """The before/after table (when there is one), then `keys` of the summary (default: all of them), then where
    the run directory is."""
    out = Console()
    if comparison:
        table = Table(title="before / after")
        for col in ("metric", "before", "after"):
            table.add_column(col)
        for row in comparison:
            table.add_row(*row)
        out.print(table)
    table = Table(title=f"run {run.name}")
    table.add_column("key")
    table.add_column("value")
    for key in summary if keys is None else keys:
        cell = _shown(key, summary)
        if cell is not None:
            table.add_row(key, cell)
    out.print(table)
    out.print(f"run directory: [bold]{run.path.resolve()}[/]")

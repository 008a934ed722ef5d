"""A run's trackers, the ones `tracking.report_to` names: MLflow (tracking/mlflow_log.py), TensorBoard, W&B and
Trackio. `Trackers.open` starts them when the run opens (run/directory.py), every task alike: each metrics row the
run writes (RunDir.append_metrics) reaches each of them at once with its step and wall time; `end` gives them the
summary and artifacts and ends them with the run's status (finish_run), and a run that fails or is interrupted
(Ctrl-C) ends them from RunDir.failing_on_error. A resumed run continues the same MLflow and W&B runs, whose ids
run.json keeps. A tracker that fails after its start is said once and left out from then on: the run itself goes
on, and summary.json and run.json record `<tracker>_error`; its record is still ended with the run's status."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from trainforge.config import RunConfig
from trainforge.config.applies import applied_params
from trainforge.errors import ConfigError, RunError
from trainforge.tracking.mlflow_log import MlflowRun, tracking_uri
from trainforge.tracking.rundir import RunDir

# each tracker but MLflow (a dependency): the module it needs, which its pip package of the same name installs
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
LABELS = {"mlflow": "MLflow", "tensorboard": "TensorBoard", "wandb": "W&B", "trackio": "Trackio"}


class Tracker(Protocol):
    name: str

    def log(self, values: dict[str, float], step: int, wall: float) -> None: ...

    def finish(self, run: RunDir, summary: dict, artifacts: list[Path], nested: list[dict] | None) -> None:
        """The end of the record of a run that completed (or awaits labels): its summary and artifacts."""

    def close(self, status: str) -> None:
        """End the record with the run's status: completed, awaiting-labels, failed or interrupted."""


def check_installed(names: list[str]) -> None:
    """A ConfigError naming the pip packages of the trackers in `names` that are not installed."""
    missing = [PACKAGES[n] for n in names if n in PACKAGES and importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise ConfigError(
            f"`tracking.report_to` lists {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: `pip install {' '.join(missing)}` (or `pip install 'trainforge[trackers]'` for every "
            f"tracker), or take {'it' if len(missing) == 1 else 'them'} out of `tracking.report_to`."
        )


def _numbers(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{key}": float(value)
        for key, value in row.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class TensorBoard:
    """Event files in <run>/tensorboard/: `tensorboard --logdir <runs_dir>` shows every run beside the others (a
    resumed run writes a new file; TensorBoard drops the steps its checkpoint came before)."""

    name = "tensorboard"

    def __init__(self, run: RunDir, params: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        self.last_step = 0
        rows = "".join(f"| {key} | {value} |\n" for key, value in params.items())
        self.writer.add_text("params", "| key | value |\n|---|---|\n" + rows)

    def log(self, values: dict[str, float], step: int, wall: float) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step, walltime=wall)
        self.writer.flush()  # live: each logging step is on disk for a TensorBoard that watches
        self.last_step = step

    def finish(self, run: RunDir, summary: dict, artifacts: list[Path], nested: list[dict] | None) -> None:
        self.log(_numbers(summary, "final."), self.last_step, time.time())

    def close(self, status: str) -> None:
        self.writer.close()


class WandB:
    """A W&B run in <run>/wandb/, offline unless WANDB_MODE says otherwise (`wandb sync <run>/wandb/offline-run-*`
    uploads it); its id is kept in run.json (`wandb_run_id`), so a resumed run continues it."""

    name = "wandb"

    def __init__(self, run: RunDir, config: RunConfig, params: dict[str, Any], resume: bool):
        import wandb

        run_id = run.info().get("wandb_run_id") or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=config.tracking.experiment,
            name=run.name,
            id=run_id,
            dir=str(run.path),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=params,
            notes=config.description or None,
            resume="allow" if resume else None,
            reinit="create_new",  # one process may track several runs (a stage chain, the tests)
            settings=wandb.Settings(console="off"),  # trainforge's own output stays as it is
        )
        run.record(wandb_run_id=run_id)

    def log(self, values: dict[str, float], step: int, wall: float) -> None:
        self.run.log(values, step=step)  # W&B stamps each row with its own wall time

    def finish(self, run: RunDir, summary: dict, artifacts: list[Path], nested: list[dict] | None) -> None:
        self.run.summary.update(_numbers(summary, "final."))

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("completed", "awaiting-labels") else 1)


class Trackio:
    """A run in Trackio's local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio; `trackio show`), in the
    project `tracking.experiment`, under the run's name, which a resumed run continues."""

    name = "trackio"

    def __init__(self, run: RunDir, config: RunConfig, params: dict[str, Any], resume: bool):
        import trackio

        self.run = trackio.init(
            project=config.tracking.experiment, name=run.name, config=params, resume="allow" if resume else "never"
        )

    def log(self, values: dict[str, float], step: int, wall: float) -> None:
        self.run.log(values, step=step)

    def finish(self, run: RunDir, summary: dict, artifacts: list[Path], nested: list[dict] | None) -> None:
        self.run.log(_numbers(summary, "final."))

    def close(self, status: str) -> None:
        import trackio

        trackio.finish()  # this run, the current one: finished and no longer current (at exit trackio ends that)


class Trackers:
    """The trackers of one run, fed from its RunDir."""

    def __init__(self, run: RunDir, live: list[Tracker], mlflow_run_id: str | None):
        self.run, self.live, self.mlflow_run_id = run, live, mlflow_run_id
        self.broken: list[Tracker] = []  # failed after their start: left out, but still ended at the end
        self.errors: dict[str, str] = {}
        self.rows = 0

    @classmethod
    def open(cls, run: RunDir, config: RunConfig, kind: str, resume: bool) -> "Trackers":
        """Start each tracker of `config` for `run` (made by `kind`, a task or an application); `resume`: continue
        the records of an interrupted run. A tracker that cannot start is a RunError, before anything trains."""
        check_installed(config.tracking.report_to)
        t = config.tracking
        params = applied_params(config, kind)
        live: list[Tracker] = []
        try:
            for name in t.report_to:
                if name == "mlflow":
                    uri = tracking_uri(t.runs_dir, t.tracking_uri)
                    tags = {"trainforge.run_dir": str(run.path.resolve()), "trainforge.kind": kind}
                    if config.description:
                        tags["mlflow.note.content"] = config.description  # the MLflow UI's run description
                    data = config.data.model_dump(mode="json")
                    live.append(MlflowRun.open(run, uri, t.experiment, params, tags, data))
                    run.record(mlflow_run_id=live[-1].run_id)
                elif name == "tensorboard":
                    live.append(TensorBoard(run, params))
                elif name == "wandb":
                    live.append(WandB(run, config, params, resume))
                else:
                    live.append(Trackio(run, config, params, resume))
        except Exception as err:
            cls(run, live, None).close("failed")  # those that started
            where = f" ({tracking_uri(t.runs_dir, t.tracking_uri)})" if name == "mlflow" else ""
            raise RunError(
                f"Run {run.name} cannot start tracking in {LABELS[name]}{where}: {type(err).__name__}: {err}. "
                f"Nothing trained yet; make the tracker work, or take {name} out of `tracking.report_to`."
            ) from err
        mlflow_run_id = next((tracker.run_id for tracker in live if isinstance(tracker, MlflowRun)), None)
        return cls(run, live, mlflow_run_id)

    def log(self, row: dict[str, Any]) -> None:
        """One metrics row: its numbers at its `step` (rows without one are numbered in order) and this moment."""
        values = _numbers(row)
        step = row.get("step")
        step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else self.rows
        self.rows += 1
        if values:
            wall = time.time()
            for tracker in list(self.live):
                self._call(tracker, "log", values, step, wall)

    def end(self, summary: dict, artifacts: list[Path], nested: list[dict] | None, status: str) -> dict[str, Any]:
        """Give each tracker the end of the record and end it with `status`; the fields summary.json and run.json
        take: `mlflow_run_id`, and `<tracker>_error` for each that failed."""
        for tracker in list(self.live):
            self._call(tracker, "finish", self.run, summary, artifacts, nested)
        self.close(status)
        return {"mlflow_run_id": self.mlflow_run_id, **{f"{name}_error": e for name, e in self.errors.items()}}

    def close(self, status: str) -> None:
        """End every tracker with `status` (a second call finds none)."""
        for tracker in list(self.live):
            self._call(tracker, "close", status)
        for tracker in self.broken:  # its failure is said already; ending its record (not left RUNNING) may work
            with contextlib.suppress(Exception):
                tracker.close(status)
        self.live, self.broken = [], []

    def _call(self, tracker: Tracker, method: str, *args: Any) -> None:
        try:
            getattr(tracker, method)(*args)
        except Exception as err:  # noqa: BLE001 - the run goes on; its tracker's failure is said and recorded
            self.errors[tracker.name] = f"{type(err).__name__}: {str(err)[:500]}"
            self.live.remove(tracker)
            if method != "close":
                self.broken.append(tracker)
            Console(stderr=True).print(
                f"[bold yellow]warning:[/] tracking run {self.run.name} in {LABELS[tracker.name]} failed: "
                f"{self.errors[tracker.name]}; the run itself is unaffected, and records the failure as "
                f"`{tracker.name}_error`.",
                highlight=False,
            )

"""A run's MLflow record, kept live (`MlflowRun`, one of the trackers of tracking/trackers.py): it opens RUNNING
with the run's params when training starts, takes each metrics row with its step and wall time as it is logged,
gets the summary (as `final.<key>`), the datasets the run trained on and its artifacts at the end (`log_run`), and
ends FINISHED, FAILED or KILLED. The store is a local sqlite file by default (<runs_dir>/mlflow.db), embedded, no
server.

A local store is laid out as `mlflow server` lays out its own: an experiment trainforge makes keeps its artifacts
at `mlflow-artifacts:/<experiment id>`, a location relative to the artifacts folder beside the database
(mlartifacts/, the default `--artifacts-destination` of `mlflow server` and `mlflow ui`). trainforge writes there
directly; `mlflow ui` run in the runs folder serves them. The store holds no absolute path, so a copied runs
folder is self-contained: its records point into the copy, and runs logged to the copy write into it."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from rich.console import Console

from trainforge.tracking.rundir import RunDir

ARTIFACTS = "mlartifacts"  # beside the database: `mlflow server`'s default artifacts destination
# what a run's status in run.json is in MLflow (a run awaiting labels has ended this process's part)
STATUSES = {"completed": "FINISHED", "awaiting-labels": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def tracking_uri(runs_dir: str | Path, configured: str | None) -> str:
    return configured or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def local_database(uri: str) -> Path | None:
    """The database file of a local sqlite store; None for a server or another database."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process at a time in a local sqlite store: MLflow creates and migrates the store, and gets-or-creates
    the experiment, with no lock of its own, so runs writing together would crash on each other's tables."""
    database = local_database(uri)
    if database is None:
        yield  # a tracking server orders its own writes
        return
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def open_store(uri: str):
    """An MlflowClient of the store at `uri` (call under `store_lock`). A new local store is made with its default
    experiment's artifacts at a relative location too."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    database = local_database(uri)
    if database is not None and not database.exists():
        _relative_store(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _relative_store(uri: str):
    """The local store as `mlflow server` opens it: experiments it makes keep artifacts at mlflow-artifacts:/<id>."""
    from mlflow.store.tracking import DEFAULT_ARTIFACTS_URI
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore(uri, DEFAULT_ARTIFACTS_URI)


def experiment_id(client, uri: str, name: str) -> str:
    """The experiment `name`, made if new: in a local store with the relative artifact location, elsewhere where
    the server or database puts it."""
    found = client.get_experiment_by_name(name)
    database = local_database(uri)
    if found is None:
        return _relative_store(uri).create_experiment(name) if database else client.create_experiment(name)
    location = found.artifact_location
    if database is not None and urlparse(location).scheme in ("", "file"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        folder = Path(local_file_uri_to_path(location))
        if not folder.resolve().is_relative_to(database.parent.resolve()):
            Console(stderr=True).print(
                f"[bold yellow]warning:[/] MLflow experiment {name!r} in {database} keeps its artifacts in {folder}, "
                f"outside {database.parent} (an absolute location, as earlier trainforge versions made them; the "
                "store was copied or moved since): this run's artifacts go there. Name a new `tracking.experiment` "
                f"for one that keeps them beside the store, in {database.parent / ARTIFACTS}.",
                highlight=False,
            )
    return found.experiment_id


def artifact_folder(uri: str, artifact_uri: str) -> Path | None:
    """The folder of a local store that holds the artifacts at `artifact_uri`, an `mlflow-artifacts:` location
    (the artifacts folder beside the database, which `mlflow ui` serves); None for any other location, which
    MLflow resolves itself (an absolute path, a bucket, a server's)."""
    database = local_database(uri)
    if database is None or urlparse(artifact_uri).scheme != "mlflow-artifacts":
        return None
    return database.parent / ARTIFACTS / urlparse(artifact_uri).path.lstrip("/")


class MlflowRun:
    """One run's MLflow record while its run trains."""

    name = "mlflow"

    def __init__(self, uri: str, client, run_id: str, data: dict):
        self.uri, self.client, self.run_id, self.data = uri, client, run_id, data

    @classmethod
    def open(cls, run: RunDir, uri: str, experiment: str, params: dict[str, Any], tags: dict[str, str], data: dict):
        """A new MLflow run (RUNNING from now), or the one run.json names (`mlflow_run_id`: a resumed run) set
        RUNNING again; with `params`. `data`: the run's data config, which names the datasets' source."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        with store_lock(uri):
            client = open_store(uri)
            run_id = run.info().get("mlflow_run_id")
            try:
                if run_id:
                    client.update_run(run_id, status="RUNNING")
            except MlflowException as err:
                Console(stderr=True).print(
                    f"[bold yellow]warning:[/] MLflow run {run_id}, which run {run.name} was recorded in, cannot be "
                    f"continued in {uri} ({err.message}); its record goes on in a new MLflow run.",
                    highlight=False,
                )
                run_id = None
            if run_id:  # params cannot change in MLflow: a resumed run adds only those it lacks
                logged = client.get_run(run_id).data.params
                params = {k: v for k, v in params.items() if k not in logged}
            else:
                created = client.create_run(experiment_id(client, uri, experiment), run_name=run.name, tags=tags)
                run_id = created.info.run_id
            listed = [Param(k, str(v)[:6000]) for k, v in params.items()]  # MLflow's longest param value
            for start in range(0, len(listed), 100):  # and its most params in one batch
                client.log_batch(run_id, params=listed[start : start + 100])
        return cls(uri, client, run_id, data)

    def log(self, values: dict[str, float], step: int, wall: float) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, value, int(wall * 1000), step) for key, value in values.items()]
        with store_lock(self.uri):
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run: RunDir, summary: dict, artifacts: list[Path], nested: list[dict] | None) -> None:
        log_run(self, run, summary, artifacts)
        if nested:
            with store_lock(self.uri):
                log_nested(self.client, self.run_id, nested)

    def close(self, status: str) -> None:
        with store_lock(self.uri):
            self.client.set_tag(self.run_id, "trainforge.status", status)
            self.client.set_terminated(self.run_id, status=STATUSES[status])


def log_run(record: MlflowRun, run: RunDir, summary: dict, artifacts: list[Path]) -> None:
    """The end of a run's record: the summary's numbers as `final.<key>`, each split the run trained and was scored
    on as a dataset input, and the `artifacts` (files, or folders logged under their name)."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    final = [Metric(f"final.{k}", float(v), stamp, 0) for k, v in summary.items() if _number(v)]
    datasets = dataset_inputs(record.data, run.info().get("data") or {})
    client, run_id = record.client, record.run_id
    with store_lock(record.uri):
        for start in range(0, len(final), 1000):  # MLflow's most metrics in one batch
            client.log_batch(run_id, metrics=final[start : start + 1000])
        if datasets:
            client.log_inputs(run_id, datasets=datasets)
        folder = artifact_folder(record.uri, client.get_run(run_id).info.artifact_uri)
    if folder is not None:
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        repository = LocalArtifactRepository(str(folder))
        put_file, put_folder = repository.log_artifact, repository.log_artifacts
    else:
        put_file, put_folder = partial(client.log_artifact, run_id), partial(client.log_artifacts, run_id)
    for path in artifacts:
        if path.is_file():
            put_file(str(path))
        elif path.is_dir():
            put_folder(str(path), path.name)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def log_nested(client, parent_id: str, children: list[dict]) -> list[str]:
    """Child runs under `parent_id` (MLflow nested runs, e.g. one per tuning trial). Each child is a dict with
    name, params, metrics, tags and optional start / end (ms since the epoch) and status."""
    from mlflow.entities import Metric, Param

    experiment = client.get_run(parent_id).info.experiment_id
    ids = []
    for child in children:
        start = child.get("start")
        mlrun = client.create_run(
            experiment,
            run_name=child["name"],
            start_time=start,
            tags={"mlflow.parentRunId": parent_id, **child.get("tags", {})},
        )
        stamp = child.get("end") or start or 0
        client.log_batch(
            mlrun.info.run_id,
            params=[Param(k, str(v)[:6000]) for k, v in child.get("params", {}).items()],
            metrics=[Metric(k, float(v), stamp, 0) for k, v in child.get("metrics", {}).items()],
        )
        client.set_terminated(mlrun.info.run_id, status=child.get("status", "FINISHED"), end_time=child.get("end"))
        ids.append(mlrun.info.run_id)
    return ids


def dataset_inputs(data: dict, recorded: dict) -> list:
    """Each split the run trained and was scored on (run.json's `data` block), as an MLflow dataset input: its
    content fingerprint is the digest and its row count the profile, so the MLflow UI shows which data made the
    model. `data`: the run's data config, which names the source."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for part, digest in recorded.get("fingerprints", {}).items():
        where = str(data.get("path") or data.get(part) or data.get("task") or data.get("dataset") or "data.sources")
        profile = json.dumps({"num_rows": recorded["rows"][part]})
        dataset = Dataset(f"{Path(where).name}:{part}", digest, "local", json.dumps({"uri": where}), profile=profile)
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", part)]))
    return inputs


def log_metrics(run_id: str, uri: str, summary: dict[str, float]) -> None:
    """Summary values added to a recorded run later (e.g. by `trainforge eval --harness`), named `final.<key>` as
    `log_run` names the summary's."""
    from mlflow.entities import Metric

    with store_lock(uri):
        client = open_store(uri)
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"final.{k}", float(v), stamp, 0) for k, v in summary.items()])

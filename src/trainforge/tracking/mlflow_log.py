"""Record a finished run in MLflow: a local sqlite store by default, embedded, no server."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainforge.tracking.rundir import RunDir


def tracking_uri(runs_dir: str | Path, configured: str | None) -> str:
    return configured or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process at a time in a local sqlite store: MLflow creates and migrates the store, and gets-or-creates
    the experiment, with no lock of its own, so runs finishing together would crash on each other's tables."""
    if not uri.startswith("sqlite:///"):
        yield  # a tracking server orders its own writes
        return
    from filelock import FileLock

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def _experiment(uri: str, experiment: str, artifact_root: Path):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
    )
    return client, experiment_id


def log_nested(parent_id: str, uri: str, experiment: str, children: list[dict]) -> list[str]:
    """Child runs under `parent_id` (MLflow nested runs, e.g. one per tuning trial). Each child is a dict with
    name, params, metrics, tags and optional start / end (ms since the epoch) and status."""
    with store_lock(uri):
        return _log_nested(parent_id, uri, experiment, children)


def _log_nested(parent_id: str, uri: str, experiment: str, children: list[dict]) -> list[str]:
    from mlflow.entities import Metric, Param

    client = _experiment(uri, experiment, Path("mlartifacts"))[0]
    experiment_id = client.get_run(parent_id).info.experiment_id
    ids = []
    for child in children:
        start = child.get("start")
        mlrun = client.create_run(
            experiment_id,
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


def log_run(
    run: RunDir, config: dict, summary: dict[str, float], uri: str, experiment: str, artifacts: list[Path]
) -> str:
    """Log params, the metric history, the summary and small artifacts; return the MLflow run id."""
    with store_lock(uri):
        return _log_run(run, config, summary, uri, experiment, artifacts)


def _log_run(
    run: RunDir, config: dict, summary: dict[str, float], uri: str, experiment: str, artifacts: list[Path]
) -> str:
    from mlflow.entities import Metric, Param

    client, experiment_id = _experiment(uri, experiment, Path(run.path).parent / "mlartifacts")
    mlrun = client.create_run(experiment_id, run_name=run.name, tags={"trainforge.run_dir": str(run.path.resolve())})
    run_id = mlrun.info.run_id
    params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
    metrics = []
    for i, row in enumerate(run.metrics()):
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                metrics.append(Metric(key, float(value), i, int(row.get("step", 0))))
    metrics += [Metric(f"final.{k}", float(v), 0, 0) for k, v in summary.items() if isinstance(v, (int, float))]
    for start in range(0, len(params), 100):  # MLflow caps a batch at 100 params and 1000 metrics
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for path in artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path))
        elif path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
    datasets = dataset_inputs(config.get("data") or {}, run.info().get("data") or {})
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    client.set_terminated(run_id)
    return run_id


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

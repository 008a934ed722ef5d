"""Batch prediction and evaluation with a saved tabular run. The input's columns are checked against the training
schema (schema.json) before the saved pipeline sees them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainforge.classical.artifacts import load_model
from trainforge.classical.data import read_table
from trainforge.classical.metrics import clustering_scores, supervised_scores
from trainforge.errors import DataError, RunError
from trainforge.tracking.rundir import RunDir, read_json


def load(run: RunDir):
    if run.status != "completed" and not run.file("schema.json").is_file():
        raise RunError(f"Run {run.path} did not finish (status {run.status}); it has no model to predict with.")
    return load_model(run.path), read_json(run.file("schema.json"))


def _checked(pipeline, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    return pipeline.named_steps["columns"].check(frame, source)  # names the file and column on any mismatch


def predict_frame(pipeline, schema: dict, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Predictions (+ class probabilities) for every row, as new columns beside the input."""
    _checked(pipeline, frame, source)
    out = frame.copy()
    model = pipeline[-1]
    if schema["task"] == "clustering":
        if not hasattr(model, "predict"):
            raise RunError(
                f"{schema['estimator']} ({type(model).__name__}) cannot assign new rows to clusters; "
                "use kmeans for a model that predicts."
            )
        out["cluster"] = pipeline.predict(frame)
        return out
    predicted = pipeline.predict(frame)
    if schema["task"] == "classification":
        classes = np.asarray(schema["classes"], dtype=object)
        out["prediction"] = classes[predicted.astype(int)]
        if hasattr(pipeline, "predict_proba"):
            for i, p in enumerate(pipeline.predict_proba(frame).T):
                out[f"proba_{classes[i]}"] = p
    else:
        out["prediction"] = predicted
    return out


def predict_answers(pipeline, schema: dict, rows: list[dict]) -> list[dict]:
    """A served request's rows ({column: value}) → [{index, prediction, probabilities?}]."""
    frame = pd.DataFrame(rows)
    result = predict_frame(pipeline, schema, frame, "The request's `input`")
    answers = []
    for i, row in enumerate(result.drop(columns=list(frame.columns)).to_dict("records")):
        answer = {"index": i, "prediction": row.pop("prediction", row.pop("cluster", None))}
        if row:
            answer["probabilities"] = {k.removeprefix("proba_"): v for k, v in row.items()}
        answers.append(answer)
    return answers


def predict_file(run: RunDir, data: str, out: str | None) -> Path:
    pipeline, schema = load(run)
    frame = read_table(data)
    result = predict_frame(pipeline, schema, frame, f"Data file {data}")
    target = Path(out) if out else Path(data).with_name(Path(data).stem + ".predictions.csv")
    if target.suffix.lower() in (".parquet", ".pq"):
        result.to_parquet(target, index=False)
    else:
        result.to_csv(target, index=False)
    return target


def encode_labels(values: pd.Series, classes: list, column: str, source: str, row_base: int = 1) -> np.ndarray:
    """Class labels → the indices the model predicts; a label the model never saw names the column and row."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    codes = values.map(lambda v: lookup.get(str(v)))
    unknown = codes.isna().to_numpy()
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        seen = sorted({str(v) for v in values[unknown]})
        raise DataError(
            f"{source}, column {column!r} (the target) holds label(s) {seen[:5]} the model never saw in "
            f"training (first in row {int(values.index[first]) + row_base}); it knows: "
            f"{', '.join(map(str, classes))}."
        )
    return codes.to_numpy(dtype=int)


def evaluate_frame(pipeline, schema: dict, frame: pd.DataFrame, source: str) -> dict[str, float]:
    target, task = schema["target"], schema["task"]
    _checked(pipeline, frame, source)
    if task == "clustering":
        labels = pipeline.predict(frame) if hasattr(pipeline[-1], "predict") else pipeline.fit_predict(frame)
        truth = frame[target].to_numpy() if target and target in frame.columns else None
        return clustering_scores(pipeline[:-1].transform(frame), np.asarray(labels), truth)
    if target not in frame.columns:
        raise DataError(
            f"{source} has no column {target!r} (the target the run was trained on); evaluation needs "
            f"the true values. Its columns are: {', '.join(map(str, frame.columns))}."
        )
    base = frame.attrs.get("row_base", 1)
    if task == "classification":
        y = encode_labels(frame[target], schema["classes"], target, source, base)
        return supervised_scores(task, pipeline, frame, y, len(schema["classes"]))
    y = pd.to_numeric(frame[target], errors="coerce")
    if y.isna().any():
        first = int(np.flatnonzero(y.isna().to_numpy())[0])
        raise DataError(
            f"{source}, column {target!r} (the regression target): row {int(frame.index[first]) + base} "
            f"holds {frame[target].iloc[first]!r}, not a number."
        )
    return supervised_scores(task, pipeline, frame, y.to_numpy(dtype=float))


def evaluate_file(run: RunDir, data: str) -> dict[str, float]:
    pipeline, schema = load(run)
    return evaluate_frame(pipeline, schema, read_table(data), f"Data file {data}")


def evaluate_test_split(run: RunDir) -> dict[str, float]:
    """Re-read the run's own data and score its saved model on the test rows it recorded in splits.json."""
    from trainforge.classical.prepare import prepare
    from trainforge.config import load_config

    pipeline, schema = load(run)
    prep = prepare(load_config(run.file("config.yaml")))
    rows = read_json(run.file("splits.json"))["test"] if schema["task"] != "clustering" else list(range(len(prep.X)))
    if not rows:
        raise RunError(f"Run {run.path} has no test split; evaluate it on a file with --data.")
    return evaluate_frame(pipeline, schema, prep.table.frame.iloc[rows], prep.table.source)

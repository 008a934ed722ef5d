"""Rows whose label is likely wrong: cleanlab's confident learning over out-of-fold predicted probabilities (each
row is predicted by a model that never saw it), ranked by how little probability the model gives the row's label.
A classification table is predicted by the config's own pipeline; a text-classification config by logistic
regression on its encoder's frozen, mean-pooled embeddings of the rows' texts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rich.console import Console

from trainforge.classical.estimators import build_estimator
from trainforge.classical.prepare import Prepared, prepare
from trainforge.config import RunConfig
from trainforge.config.schema import is_nn_run
from trainforge.errors import ConfigError, DataError

SHOWN = 50  # ranked rows kept in the report
TEXT_SHOWN = 200  # characters of a row's text kept in the report

console = Console(stderr=True)


@dataclass
class Labelled:
    """A classification data set as the ranking sees it: features and label ids per row, and where each row is."""

    X: Any  # what `model` fits: a table for a tabular pipeline, an array of embeddings for text
    y: np.ndarray  # label ids into `classes`
    classes: list
    model: Callable[[], Any]  # a fresh unfitted classifier with predict_proba
    described: str  # the model, as the report names it
    seed: int
    folds: int  # each row is predicted by the model fitted on the other folds (stratified)
    locate: Callable[[int], tuple[str, Any]]  # (source, row number the user sees) of a position
    texts: list[str] | None = None  # text classification: each row's text, shown in the report


def check_folds(y: np.ndarray, classes: list, folds: int) -> None:
    """Stratified folds need every class in every fold; said before anything slow (embedding) runs."""
    counts = Counter(y.tolist())
    scarce = [f"{classes[label]!r} ({n})" for label, n in sorted(counts.items()) if n < folds]
    if scarce:
        raise DataError(
            f"--label-issues predicts each row from {folds} stratified folds, so every class needs at least "
            f"{folds} rows; these have fewer: {', '.join(scarce)}."
        )


def tabular_labelled(prep: Prepared, folds: int = 5) -> Labelled:
    config = prep.config
    if not hasattr(prep.pipeline(), "predict_proba"):
        raise ConfigError(f"Model {config.model.name!r} gives no probabilities; use e.g. logistic_regression.")
    check_folds(prep.y, prep.classes, folds)
    seed = config.training.seed
    return Labelled(prep.X, prep.y, prep.classes, prep.pipeline, config.model.name, seed, folds, prep.table.locate)


def text_labelled(config: RunConfig, folds: int = 5) -> Labelled:
    """Every row of every split (train, validation, test, in that order), embedded by the config's encoder."""
    from trainforge.data.labelled import load_labelled

    if config.data.multi_label:
        raise ConfigError("Key `data.multi_label`: --label-issues ranks single-label rows; set it to false.")
    if is_nn_run(config.task, config.model.name):
        raise ConfigError(
            f"Model {config.model.name!r} is a network trained from scratch; --label-issues embeds the texts with "
            "a pretrained encoder: set `model.name` to one, e.g. minilm-l6."
        )
    splits, classes = load_labelled(config.data, config.training.seed)
    rows = [*splits.train, *splits.validation, *splits.test]
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[row["labels"][0]] for row in rows])
    check_folds(y, classes, folds)
    texts = [row["text"] for row in rows]
    console.print(f"[cyan]embedding {len(rows)} rows with the frozen {config.model.name}…[/]")
    X = embed_texts(config.model.name, texts, config.evaluation.batch_size, config.training.max_length)
    seed = config.training.seed
    return Labelled(
        X,
        y,
        classes,
        lambda: build_estimator("logistic_regression", "classification", {}, seed),
        f"{config.model.name} embeddings + logistic_regression",
        seed,
        folds,
        lambda position: _where(rows[position]["where"]),
        texts,
    )


def _where(where: str) -> tuple[str, int]:
    source, row = where.rsplit(", row ", 1)  # data.labelled writes "<source>, row <n>"
    return source, int(row)


def embed_texts(name: str, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """Sentence embeddings: the frozen encoder's last hidden states averaged over the real (unpadded) tokens, as
    the feature-extraction method computes them."""
    import torch
    from transformers import AutoModel

    from trainforge.models import load_tokenizer, resolve_model
    from trainforge.models.loading import from_pretrained_noting_new_weights, load_failure
    from trainforge.models.pooling import mean_pool

    path = resolve_model(name)
    try:
        encoder = from_pretrained_noting_new_weights(AutoModel, path, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear message
        raise load_failure(name, path, "encoder", err) from None
    tokenizer = load_tokenizer(name)
    encoder.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"]))
    return np.concatenate(out)


def out_of_fold_probabilities(data: Labelled) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splitter = StratifiedKFold(data.folds, shuffle=True, random_state=data.seed)
    return cross_val_predict(data.model(), data.X, data.y, cv=splitter, method="predict_proba")


def ranked_label_issues(data: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """Row positions with a likely wrong label, most likely first; and the out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues

    probabilities = out_of_fold_probabilities(data)
    return np.asarray(
        find_label_issues(data.y, probabilities, return_indices_ranked_by="self_confidence")
    ), probabilities


def issue_report(data: Labelled, ranked: np.ndarray, probabilities: np.ndarray) -> dict:
    """The ranking as `--label-issues` reports it: counts, and the first rows with where they are."""
    shown = []
    for position in ranked[:SHOWN]:
        given = int(data.y[position])
        source, row = data.locate(int(position))
        issue = {
            "source": source,
            "row": row,
            "label": data.classes[given],
            "predicted": data.classes[int(np.argmax(probabilities[position]))],
            "probability_of_label": round(float(probabilities[position, given]), 4),
        }
        if data.texts is not None:
            text = data.texts[position]
            issue["text"] = text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + "…"
        shown.append(issue)
    return {"rows": len(data.y), "issues": len(ranked), "model": data.described, "folds": data.folds, "ranked": shown}


def label_issues(config: RunConfig, folds: int = 5) -> dict:
    """The report of `trainforge data audit CONFIG --label-issues` for a classification or text-classification
    config."""
    if config.task == "classification":
        data = tabular_labelled(prepare(config), folds)
    elif config.task == "text-classification":
        data = text_labelled(config, folds)
    else:
        raise ConfigError(
            f"--label-issues needs a classification (table) or text-classification config; this one's task is "
            f"{config.task!r}."
        )
    return issue_report(data, *ranked_label_issues(data))

"""Labelled text rows: validate each row (text + label or label list), collect the classes, encode for a model."""

from __future__ import annotations

import json

from trainforge.config.schema import DataConfig
from trainforge.data.formats import field_text, row_error
from trainforge.data.splits import Splits, load_splits
from trainforge.errors import DataError


def checked_label(value, key: str, source: str, number: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
        raise row_error(
            source, number, f"field `{key}` must be a non-empty string or integer label, got {value!r:.60}."
        )
    return str(value).strip()


def _labels(value, key: str, source: str, number: int) -> list[str]:
    if isinstance(value, str):  # CSV cells: a JSON list, or labels separated by `|`
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise row_error(source, number, f"field `{key}` = {text!r:.60} is not a JSON list of labels.") from None
        else:
            value = [v for v in text.split("|") if v.strip()]
    if not isinstance(value, list) or not value:
        raise row_error(
            source, number, f"field `{key}` must be a non-empty list of labels (multi-label), got {value!r:.60}."
        )
    return sorted({checked_label(v, key, source, number) for v in value})


def normalizer(cfg: DataConfig):
    """The row check for `load_splits`: {"text", "labels": [...], "row": <n>, "where": "<file>, row <n>"} per
    row."""
    key = cfg.target

    def normalize(numbered: list[tuple[int, dict]], source: str) -> list[dict]:
        rows = []
        for number, row in numbered:
            text = field_text(row, cfg.text_field, source, number)
            if key not in row or row[key] is None:
                present = ", ".join(sorted(map(str, row))) or "none"
                raise row_error(
                    source,
                    number,
                    f"field `{key}` (the label{'s' if cfg.multi_label else ''}) is missing "
                    f"(fields present: {present}); set `data.target` to the label field.",
                )
            labels = (
                _labels(row[key], key, source, number)
                if cfg.multi_label
                else [checked_label(row[key], key, source, number)]
            )
            rows.append({"text": text, "labels": labels, "row": number, "where": f"{source}, row {number}"})
        return rows

    return normalize


def load_labelled(cfg: DataConfig, seed: int) -> tuple[Splits, list[str]]:
    """The checked splits and the sorted classes of the training split; evaluation labels unseen in training fail."""
    splits = load_splits(cfg, seed, normalizer(cfg))
    classes = sorted({label for row in splits.train for label in row["labels"]})
    if len(classes) < 2 and not cfg.multi_label:
        raise DataError(
            f"{splits.source}: the training split holds one class ({classes[0]!r}); classification needs at least two."
        )
    known = set(classes)
    for part in ("validation", "test"):
        for row in getattr(splits, part):
            unseen = [label for label in row["labels"] if label not in known]
            if unseen:
                raise DataError(
                    f"Data {row['where']} ({part} split): label {unseen[0]!r} never occurs in the training "
                    f"split, so no model can learn it; the training labels are {', '.join(classes)}."
                )
    return splits, classes


def encode(tokenizer, rows: list[dict], classes: list[str], multi_label: bool, max_length: int) -> list[dict]:
    if not rows:  # e.g. `split.validation: 0`; the tokenizer rejects an empty batch
        return []
    index = {c: i for i, c in enumerate(classes)}
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    out = []
    for i, row in enumerate(rows):
        item = {k: v[i] for k, v in enc.items()}
        if multi_label:
            item["labels"] = [1.0 if c in row["labels"] else 0.0 for c in classes]
        else:
            item["labels"] = index[row["labels"][0]]
        out.append(item)
    return out

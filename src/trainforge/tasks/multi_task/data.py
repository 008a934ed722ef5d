"""Multi-task rows: text plus one field per task (a class label or a number; a row may lack some), checked,
split and encoded with one `labels` vector per row (NaN where a row has no label for a task)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from trainforge.config.schema import DataConfig, MultiTaskConfig
from trainforge.data.formats import field_text, row_error
from trainforge.data.labelled import checked_label
from trainforge.data.splits import Splits, load_splits
from trainforge.errors import DataError

MISSING = float("nan")


@dataclass
class TaskSpec:
    """A task as the model and the metrics need it: classes (classification) or the target's train mean / std
    (regression: the head learns the standardized number)."""

    name: str
    type: str
    target: str
    weight: float = 1.0
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def outputs(self) -> int:
        return len(self.classes) if self.type == "classification" else 1

    def to_dict(self) -> dict:
        return asdict(self)


def _value(task, row: dict, source: str, number: int):
    value = row.get(task.target)
    if (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    ):
        return None
    if task.type == "classification":
        return checked_label(value, task.target, source, number)
    if isinstance(value, bool):
        raise row_error(
            source, number, f"field `{task.target}` (task {task.name}, regression) must be a number, got {value!r}."
        )
    try:
        number_value = float(value)
    except (TypeError, ValueError):
        raise row_error(
            source, number, f"field `{task.target}` (task {task.name}, regression) must be a number, got {value!r:.60}."
        ) from None
    if not math.isfinite(number_value):
        raise row_error(
            source, number, f"field `{task.target}` (task {task.name}) must be a finite number, got {value!r}."
        )
    return number_value


def normalizer(cfg: DataConfig, mt: MultiTaskConfig):
    """The row check for `load_splits`: {"text", "targets": {task: label | number | None}, "row", "where"} per
    row."""

    def normalize(numbered: list[tuple[int, dict]], source: str) -> list[dict]:
        rows = []
        for number, row in numbered:
            text = field_text(row, cfg.text_field, source, number)
            targets = {t.name: _value(t, row, source, number) for t in mt.tasks}
            if all(v is None for v in targets.values()):
                present = ", ".join(sorted(map(str, row))) or "none"
                wanted = ", ".join(f"`{t.target}`" for t in mt.tasks)
                raise row_error(
                    source,
                    number,
                    f"the row carries no target of any task (expected at least one of {wanted}; "
                    f"fields present: {present}); set `multitask.tasks[].target` to the fields that hold them.",
                )
            rows.append({"text": text, "targets": targets, "row": number, "where": f"{source}, row {number}"})
        return rows

    return normalize


def _spec(task, train: list[dict], source: str) -> TaskSpec:
    values = [r["targets"][task.name] for r in train if r["targets"][task.name] is not None]
    spec = TaskSpec(task.name, task.type, task.target, task.weight)
    if task.type == "classification":
        spec.classes = sorted(set(values))
        if len(spec.classes) < 2:
            raise DataError(
                f"{source}: task {task.name!r} (field `{task.target}`) has {len(spec.classes)} class(es) "
                f"in the training split ({', '.join(spec.classes) or 'none'}); classification needs two."
            )
    else:
        if len(values) < 2:
            raise DataError(
                f"{source}: task {task.name!r} (field `{task.target}`) has {len(values)} labelled "
                "training row(s); regression needs at least two."
            )
        spec.mean = sum(values) / len(values)
        spec.std = math.sqrt(sum((v - spec.mean) ** 2 for v in values) / len(values)) or 1.0
    return spec


def check_known(specs: list[TaskSpec], rows: list[dict], part: str) -> None:
    """Class labels of held-out rows must occur in training: no head can predict an unseen class."""
    for spec in specs:
        if spec.type != "classification":
            continue
        known = set(spec.classes)
        for row in rows:
            label = row["targets"][spec.name]
            if label is not None and label not in known:
                raise DataError(
                    f"Data {row['where']} ({part}): label {label!r} of task {spec.name!r} never occurs in "
                    f"the training split, so no head can learn it; its labels are {', '.join(spec.classes)}."
                )


def load_multitask(cfg: DataConfig, mt: MultiTaskConfig, seed: int) -> tuple[Splits, list[TaskSpec]]:
    splits = load_splits(cfg, seed, normalizer(cfg, mt))
    specs = [_spec(task, splits.train, splits.source) for task in mt.tasks]
    for part in ("validation", "test"):
        check_known(specs, getattr(splits, part), f"{part} split")
    return splits, specs


def label_vector(specs: list[TaskSpec], targets: dict) -> list[float]:
    """Class index or standardized number per task; NaN where the row has no label for the task."""
    out = []
    for spec in specs:
        value = targets.get(spec.name)
        if value is None:
            out.append(MISSING)
        elif spec.type == "classification":
            out.append(float(spec.classes.index(value)))
        else:
            out.append((value - spec.mean) / spec.std)
    return out


def encode(tokenizer, rows: list[dict], specs: list[TaskSpec], max_length: int) -> list[dict]:
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    return [
        {**{k: v[i] for k, v in enc.items()}, "labels": label_vector(specs, row.get("targets", {}))}
        for i, row in enumerate(rows)
    ]

"""Seeded train/validation/test splits: by fractions of one source, or from separate files."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from trainforge.config.schema import DataConfig
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.tasks import generate_task
from trainforge.errors import DataError


@dataclass
class Splits:
    train: list[dict]
    validation: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    source: str = ""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_by_fractions(rows: list, train: float, validation: float, seed: int) -> tuple[list, list, list]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_train = round(len(rows) * train)
    n_val = round(len(rows) * validation)
    pick = lambda idx: [rows[i] for i in idx]  # noqa: E731
    return pick(order[:n_train]), pick(order[n_train : n_train + n_val]), pick(order[n_train + n_val :])


Normalize = Callable[[list[tuple[int, dict]], str], list[dict]]  # (numbered rows, source) → checked rows


def load_splits(cfg: DataConfig, seed: int, normalize: Normalize | None = None) -> Splits:
    """Read, validate and split the data of a run; every row is checked before anything trains. `normalize`
    replaces the check of `data.format` (text classification checks text/label rows its own way)."""
    check = normalize or (lambda rows, source: normalize_rows(rows, cfg.format, source, cfg.text_field))
    _read = lambda path, cfg: check(read_rows(path, cfg.max_rows, cfg.text_unit), path)  # noqa: E731
    if cfg.task:
        fmt, rows = generate_task(cfg.task, cfg.task_size, seed)
        if fmt == "classification" and cfg.format == "text":  # a labelled task's texts serve as a domain corpus
            fmt, rows = "text", [{"text": row["text"]} for row in rows]
        if fmt == "preference":
            rows = normalize_rows(list(enumerate(rows, start=1)), fmt, f"bundled task {cfg.task}")
            if cfg.format == "chat":  # prompt + chosen answer: SFT data, so SFT can precede DPO on the same task
                fmt, rows = (
                    "chat",
                    [{"messages": r["prompt"] + r["chosen"], "constraint": r["constraint"]} for r in rows],
                )
        if fmt != cfg.format:
            raise DataError(f"Bundled task {cfg.task!r} produces `{fmt}` rows but `data.format` is `{cfg.format}`.")
        rows = [{**row, "row": row.get("row", number)} for number, row in enumerate(rows, start=1)]
        source = f"bundled task {cfg.task} ({cfg.task_size} rows, seed {seed})"
        if normalize:
            rows = normalize(list(enumerate(rows, start=1)), f"bundled task {cfg.task}")
    elif cfg.path:
        rows, source = _read(cfg.path, cfg), cfg.path
    else:
        return Splits(
            train=_read(cfg.train, cfg),
            validation=_read(cfg.validation, cfg) if cfg.validation else [],
            test=_read(cfg.test, cfg) if cfg.test else [],
            source=cfg.train,
        )
    train, val, test = split_by_fractions(rows, cfg.split.train, cfg.split.validation, seed)
    if not train:
        raise DataError(f"{source} has {len(rows)} rows: too few to give the train split any.")
    return Splits(train, val, test, source)

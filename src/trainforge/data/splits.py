"""Seeded train/validation/test splits: by fractions of one source, or from separate files."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from trainforge.config.schema import DataConfig
from trainforge.data.formats import Naming, normalize_rows
from trainforge.data.llamafactory import is_entry, resolve
from trainforge.data.readers import read_rows
from trainforge.data.report import DataReport
from trainforge.data.tasks import generate_task
from trainforge.errors import DataError


@dataclass
class Splits:
    train: list[dict]
    validation: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    source: str = ""
    layout: str | None = None  # the rows' layout, as set or detected
    report: DataReport = field(default_factory=DataReport)  # fields not used, and why the layout

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


def _bundled(cfg: DataConfig, seed: int) -> tuple[str, list[dict]]:
    """A bundled task's rows in the layout `data.format` asks for (its own under `auto`)."""
    fmt, rows = generate_task(cfg.task, cfg.task_size, seed)
    if fmt == "classification" and cfg.format == "text":  # a labelled task's texts serve as a domain corpus
        fmt, rows = "text", [{"text": row["text"]} for row in rows]
    if fmt == "preference":
        rows = normalize_rows(list(enumerate(rows, start=1)), fmt, f"bundled task {cfg.task}")
        if cfg.format == "chat":  # prompt + chosen answer: SFT data, so SFT can precede DPO on the same task
            fmt = "chat"
            rows = [{"messages": r["prompt"] + r["chosen"], "constraint": r["constraint"]} for r in rows]
    if fmt != cfg.format and cfg.format != "auto":
        raise DataError(f"Bundled task {cfg.task!r} produces `{fmt}` rows but `data.format` is `{cfg.format}`.")
    return fmt, [{**row, "row": row.get("row", number)} for number, row in enumerate(rows, start=1)]


def load_splits(cfg: DataConfig, seed: int, normalize: Normalize | None = None) -> Splits:
    """Read, validate and split the data of a run; every row is checked before anything trains. `normalize`
    replaces the check of `data.format` (text classification checks text/label rows its own way). Separate split
    files must hold one layout."""
    report, layouts = DataReport(), {}

    def read(path: str, part: str) -> list[dict]:
        fmt, names, notes = cfg.format, Naming(cfg.columns, cfg.roles), []
        if is_entry(path):  # LLaMA-Factory's registry names the file, its layout and field names
            entry = resolve(path)
            path, names, notes = entry.path, entry.names, entry.notes
            fmt = entry.layout if fmt == "auto" else fmt
        numbered = read_rows(path, cfg.max_rows, cfg.text_unit)
        if normalize:
            return normalize(numbered, path)
        found = DataReport(source=path, notes=notes)
        rows = normalize_rows(numbered, fmt, path, cfg.text_field, found, cfg.strict, names)
        layouts[path] = found.layout
        report.merge(found, "" if part == "train" else part)
        report.layout, report.why = report.layout or found.layout, report.why or found.why
        return rows

    if cfg.task:
        fmt, rows = _bundled(cfg, seed)
        source = f"bundled task {cfg.task} ({cfg.task_size} rows, seed {seed})"
        report.layout = layouts[source] = fmt
        if normalize:
            rows = normalize(list(enumerate(rows, start=1)), f"bundled task {cfg.task}")
    elif cfg.path:
        rows, source = read(cfg.path, "train"), cfg.path
    else:
        splits = Splits(train=read(cfg.train, "train"), source=cfg.train, report=report)
        splits.validation = read(cfg.validation, "validation") if cfg.validation else []
        splits.test = read(cfg.test, "test") if cfg.test else []
        if len(set(layouts.values())) > 1:
            shown = ", ".join(f"{path}: {layout}" for path, layout in layouts.items())
            raise DataError(
                f"The split files hold different layouts ({shown}); give them one layout (or set `data.format`)."
            )
        splits.layout = report.layout
        return splits
    train, val, test = split_by_fractions(rows, cfg.split.train, cfg.split.validation, seed)
    if not train:
        raise DataError(f"{source} has {len(rows)} rows: too few to give the train split any.")
    return Splits(train, val, test, source, report.layout, report)

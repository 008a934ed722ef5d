"""Seeded train/validation/test splits: by fractions of one source, or from separate files."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Sequence

from trainforge.config.schema import DataConfig, SourceConfig
from trainforge.data.clean import clean_examples
from trainforge.data.formats import Naming, normalize_rows, normalize_stream
from trainforge.data.llamafactory import is_entry, resolve
from trainforge.data.readers import iter_rows, read_rows
from trainforge.data.report import DataReport
from trainforge.data.rows import Rows
from trainforge.data.tasks import generate_task
from trainforge.errors import DataError


@dataclass
class Splits:
    train: Sequence[dict]  # a list, or Rows on disk
    validation: Sequence[dict] = field(default_factory=list)
    test: Sequence[dict] = field(default_factory=list)
    source: str = ""
    layout: str | None = None  # the rows' layout, as set or detected (`mixed`: sources of several layouts)
    report: DataReport = field(default_factory=DataReport)  # fields not used, and why the layout
    layouts: dict[str, str] = field(default_factory=dict)  # several sources: each one's layout
    key: str | None = None  # what the examples are made from, when kept on disk (their cache key)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_order(size: int, train: float, validation: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """The row indices of each split of `size` rows: a seeded shuffle cut by fractions."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    n_train, n_val = round(size * train), round(size * validation)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def split_by_fractions(rows: Sequence, train: float, validation: float, seed: int) -> tuple:
    parts = split_order(len(rows), train, validation, seed)
    if isinstance(rows, Rows):  # rows on disk: a selection of them, not a copy
        return tuple(rows.select(indices) for indices in parts)
    return tuple([rows[i] for i in indices] for indices in parts)


@dataclass(frozen=True)
class FileSettings:
    """How to read one data file: where it is, its layout (`auto`: detected), its names, and notes about them."""

    path: str
    format: str
    names: Naming
    notes: list[str]


def file_settings(cfg: DataConfig, path: str) -> FileSettings:
    """The data config's reading of `path`; a LLaMA-Factory registry entry names the file, its layout and names."""
    if is_entry(path):
        entry = resolve(path)
        return FileSettings(entry.path, entry.layout if cfg.format == "auto" else cfg.format, entry.names, entry.notes)
    return FileSettings(path, cfg.format, Naming(cfg.columns, cfg.roles), [])


def stream_examples(cfg: DataConfig, path: str, report: DataReport, carry: Collection[str] = ()) -> Iterator[dict]:
    """The checked examples of one data file as they are read (its first `data.max_rows`); what was left unused
    and the layout (with why) land in `report`; `carry` as in `normalize_rows`."""
    settings = file_settings(cfg, path)
    report.source, report.notes = settings.path, report.notes + settings.notes
    rows = islice(iter_rows(settings.path, cfg.text_unit), cfg.max_rows)
    return normalize_stream(
        rows, settings.format, settings.path, cfg.text_field, report, cfg.strict, settings.names, carry
    )


Normalize = Callable[[list[tuple[int, dict]], str], list[dict]]  # (numbered rows, source) → checked rows
Keep = Callable[[Iterator[dict]], Sequence]  # checked examples as they are read → where they are kept


def _bundled(cfg: DataConfig, seed: int, carry: Collection[str] = ()) -> tuple[str, list[dict]]:
    """A bundled task's rows in the layout `data.format` asks for (its own under `auto`)."""
    fmt, rows = generate_task(cfg.task, cfg.task_size, seed)
    if fmt == "classification" and cfg.format == "text":  # a labelled task's texts serve as a domain corpus
        fmt, rows = "text", [{"text": row["text"]} for row in rows]
    if fmt in ("preference", "chat"):  # checked as a file's rows are (a chat row's tool calls become text)
        rows = normalize_rows(list(enumerate(rows, start=1)), fmt, f"bundled task {cfg.task}", carry=carry)
    if fmt == "preference" and cfg.format == "chat":  # prompt + chosen answer: SFT can precede DPO on one task
        fmt = "chat"
        rows = [{"messages": r["prompt"] + r["chosen"], "constraint": r["constraint"]} for r in rows]
    if fmt != cfg.format and cfg.format != "auto":
        raise DataError(f"Bundled task {cfg.task!r} produces `{fmt}` rows but `data.format` is `{cfg.format}`.")
    return fmt, [{**row, "row": row.get("row", number)} for number, row in enumerate(rows, start=1)]


def load_splits(
    cfg: DataConfig, seed: int, normalize: Normalize | None = None, keep: Keep = list, carry: Collection[str] = ()
) -> Splits:
    """Read, validate and split the data of a run; every row is checked before anything trains. `normalize`
    replaces the check of `data.format` (text classification checks text/label rows its own way); `keep` stores
    the checked examples of a file (in memory, or on disk for data of any size). `data.clean` applies to the
    checked examples of each file, bundled task or source on its own, before the split (the config allows it only
    where the run records what it drops: lm and reward runs, which have no `normalize`).
    Separate split files must hold one layout. `carry` names row fields kept in each example's `columns`."""
    report, layouts = DataReport(), {}

    def cleaned(examples: Iterable[dict], source: str, found: DataReport) -> Iterable[dict]:
        return clean_examples(cfg.clean, examples, source, found) if cfg.clean else examples

    def read(path: str, part: str) -> list[dict]:
        if normalize:
            path = file_settings(cfg, path).path
            return normalize(read_rows(path, cfg.max_rows, cfg.text_unit), path)
        found = DataReport()
        examples = stream_examples(cfg, path, found, carry)
        rows = keep(cleaned(examples, found.source, found))
        layouts[found.source] = found.layout
        report.merge(found, "" if part == "train" else part)
        report.layout, report.why = report.layout or found.layout, report.why or found.why
        return rows

    if cfg.sources:
        return _mixed(cfg, seed, normalize, keep, carry)
    if cfg.task:
        fmt, rows = _bundled(cfg, seed, carry)
        source = f"bundled task {cfg.task} ({cfg.task_size} rows, seed {seed})"
        report.layout = layouts[source] = fmt
        if normalize:
            rows = normalize(list(enumerate(rows, start=1)), f"bundled task {cfg.task}")
        else:
            rows = list(cleaned(rows, f"bundled task {cfg.task}", report))
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


def _label(source: SourceConfig, index: int) -> str:
    name = source.task or Path(source.path.split("#")[-1]).stem.split(".")[0] or f"source{index}"
    return f"{index}.{name}"


def _interleaved(parts: list[tuple[str, list[dict], float]], seed: int, report: DataReport) -> list[dict]:
    """Rows of every source to their weights' proportions, as many as those allow without repeating a row, in a
    seeded order; the rows each source leaves out are said in `report`."""
    rng = random.Random(seed)
    total = sum(weight for _, _, weight in parts)
    size = min(len(rows) * total / weight for _, rows, weight in parts)
    mixed = []
    for label, rows, weight in parts:
        take = min(len(rows), round(size * weight / total))
        mixed += rng.sample(rows, take)
        if take < len(rows):
            report.notes.append(
                f"source {label}: {take} of its {len(rows)} training rows mixed in (weight "
                f"{weight:g} of {total:g}); the other {len(rows) - take} are left out"
            )
    rng.shuffle(mixed)
    return mixed


def _mixed(cfg: DataConfig, seed: int, normalize: Normalize | None, keep: Keep, carry: Collection[str]) -> Splits:
    """Several sources: each read (and split by fractions, or sent whole to one split) on its own, then
    concatenated or interleaved to their weights (training rows; held-out rows are concatenated). Rows keep their
    source in their row number (`<source>:<row>`)."""
    report, layouts = DataReport(), {}
    parts: dict[str, list] = {"train": [], "validation": [], "test": []}
    for index, source in enumerate(cfg.sources):
        label = _label(source, index)
        single = cfg.model_copy(
            update={
                "sources": [],
                "path": source.path,
                "task": source.task,
                "task_size": source.task_size,
                "format": source.format,
                "columns": source.columns,
                "roles": source.roles,
                "max_rows": source.max_rows or cfg.max_rows,
            }
        )
        one = load_splits(single, seed + index, normalize, keep, carry)
        layouts[label] = one.layout
        report.merge(one.report, label)
        pieces = {"train": one.train, "validation": one.validation, "test": one.test}
        if source.split != "all":
            pieces = {source.split: one.train + one.validation + one.test}
        for part, rows in pieces.items():
            parts[part].append((label, [{**row, "row": f"{label}:{row.get('row')}"} for row in rows], source.weight))
    train = parts["train"]
    if train and all(weight is not None for _, _, weight in train):
        rows = _interleaved(train, seed, report)
    else:
        rows = [row for _, part, _ in train for row in part]
    report.sources = {label: sum(row["row"].startswith(f"{label}:") for row in rows) for label, _, _ in train}
    held_out = {part: [row for _, rows_, _ in parts[part] for row in rows_] for part in ("validation", "test")}
    kinds = set(layouts.values())
    report.layout = kinds.pop() if len(kinds) == 1 else "mixed"
    report.why = "; ".join(f"{label}: {layout}" for label, layout in layouts.items())
    splits = Splits(
        rows, held_out["validation"], held_out["test"], f"{len(cfg.sources)} sources", report.layout, report
    )
    splits.layouts = layouts
    return splits

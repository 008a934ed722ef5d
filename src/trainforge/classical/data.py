"""Tables for tabular tasks: scikit-learn's bundled datasets, CSV and Parquet files. Checks that the columns the
config names exist and that the target is usable; every failure names the file and the column."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainforge.config.schema import DataConfig
from trainforge.errors import DataError

ROW_BASE = "row_base"  # frame.attrs key: the row number the user sees for position 0 (2 in a CSV: after the header)


@dataclass
class Table:
    frame: pd.DataFrame  # every row of every source, in time order when `data.time_column` is set
    source: str
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # fixed train/validation/test rows (separate files)

    def row(self, position: int) -> int:
        return int(self.frame.index[position]) + self.frame.attrs.get(ROW_BASE, 1)


def bundled(name: str) -> pd.DataFrame:
    import sklearn.datasets

    frame = getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame
    frame.attrs[ROW_BASE] = 1
    return frame


def read_table(path: str | Path, max_rows: int | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, nrows=max_rows)
            frame.attrs[ROW_BASE] = 2
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            frame = frame.iloc[:max_rows] if max_rows else frame
            frame.attrs[ROW_BASE] = 1
        else:
            raise DataError(f"Data file {path} has type {path.suffix!r}; a tabular task reads .csv or .parquet files.")
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"Data file {path} is not UTF-8 text ({err.reason}).") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"Data file {path} is empty: no header, no rows.") from None
    except Exception as err:  # noqa: BLE001 - pandas / arrow raise many types for a malformed file
        raise DataError(f"Data file {path} could not be read as a table: {err}") from None
    if frame.empty:
        raise DataError(f"Data file {path} holds no rows.")
    frame.columns = [str(c) for c in frame.columns]
    odd = [c for c in frame.columns if any(ord(ch) < 32 or ord(ch) == 127 for ch in c)]
    if odd:  # a NUL or other control character in a header breaks column selection further down
        raise DataError(f"Data file {path}: column name {odd[0]!r} holds control characters; is the header "
                        "corrupt or the file binary?")
    return frame


def missing_columns_error(source: str, role: str, missing: list[str], columns) -> DataError:
    names = ", ".join(repr(c) for c in missing)
    return DataError(f"{source} has no column {names} ({role}); its columns are: {', '.join(map(str, columns))}.")


def check_columns(frame: pd.DataFrame, cfg: DataConfig, source: str, extra: dict[str, list[str]] | None = None,
                  need_target: bool = True) -> None:
    roles = {"the target, `data.target`": [cfg.target] if cfg.target and need_target else [],
             "`data.drop_columns`": cfg.drop_columns,
             "`data.group_column`": [cfg.group_column] if cfg.group_column else [],
             "`data.time_column`": [cfg.time_column] if cfg.time_column else [], **(extra or {})}
    for role, names in roles.items():
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise missing_columns_error(source, role, missing, frame.columns)


def load_table(cfg: DataConfig, task: str, extra: dict[str, list[str]] | None = None) -> Table:
    """Every row of the run's data, checked; split assignment happens later (see splits.py)."""
    if cfg.dataset:
        frames = {"all": bundled(cfg.dataset)}
        source = f"bundled dataset {cfg.dataset}"
        if cfg.max_rows:
            frames["all"] = frames["all"].iloc[: cfg.max_rows]
    elif cfg.path:
        frames, source = {"all": read_table(cfg.path, cfg.max_rows)}, f"Data file {cfg.path}"
    else:
        files = {"train": cfg.train, "validation": cfg.validation, "test": cfg.test}
        frames = {part: read_table(p, cfg.max_rows) for part, p in files.items() if p}
        source = f"Data file {cfg.train}"
    for part, frame in frames.items():
        where = source if part in ("all", "train") else f"Data file {getattr(cfg, part)}"
        check_columns(frame, cfg, where, extra, need_target=task != "clustering" or cfg.target is not None)
        if cfg.target and cfg.target in frame.columns:
            check_target(frame, cfg.target, task, where)
    if len(frames) == 1:
        frame, parts = next(iter(frames.values())), {}
    else:
        columns = list(frames["train"].columns)
        for part, other in frames.items():
            if set(other.columns) != set(columns):
                raise DataError(f"Data file {getattr(cfg, part)} has columns {sorted(other.columns)} but the training "
                                f"file {cfg.train} has {sorted(columns)}; the split files must share one header.")
        sizes = np.cumsum([0, *(len(f) for f in frames.values())])
        parts = {part: np.arange(sizes[i], sizes[i + 1]) for i, part in enumerate(frames)}
        base = frames["train"].attrs.get(ROW_BASE, 1)
        frame = pd.concat([f[columns] for f in frames.values()], ignore_index=True)
        frame.attrs[ROW_BASE] = base
    if cfg.time_column and not parts:
        order = np.argsort(_time_values(frame, cfg.time_column, source), kind="stable")
        frame = frame.iloc[order]
    return Table(frame, source, parts)


def _time_values(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        at = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}, column {column!r} (`data.time_column`): row {int(frame.index[at]) + frame.attrs.get(ROW_BASE, 1)} "
                        f"holds {values.iloc[at]!r}, not a time or a number; every row needs one to be ordered.")
    return parsed.to_numpy()


def check_target(frame: pd.DataFrame, target: str, task: str, source: str) -> None:
    values = frame[target]
    empty = values.isna().to_numpy()
    if empty.all():
        raise DataError(f"{source}, column {target!r} (the target): every row is empty.")
    if empty.any() and task != "clustering":
        rows = [int(frame.index[i]) + frame.attrs.get(ROW_BASE, 1) for i in np.flatnonzero(empty)[:5]]
        raise DataError(f"{source}, column {target!r} (the target) is empty in {int(empty.sum())} rows "
                        f"(rows {', '.join(map(str, rows))}{', ...' if empty.sum() > 5 else ''}); fill or drop them.")
    if task == "regression":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if np.isinf(numbers).any():
            at = int(np.flatnonzero(np.isinf(numbers))[0])
            raise DataError(f"{source}, column {target!r} (the regression target): row "
                            f"{int(frame.index[at]) + frame.attrs.get(ROW_BASE, 1)} holds {values.iloc[at]!r}, an "
                            "infinite number; a target must be finite.")
    if task == "regression" and not pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & ~empty)
        if len(bad):
            raise DataError(f"{source}, column {target!r} (the regression target) must hold numbers; row "
                            f"{int(frame.index[bad[0]]) + frame.attrs.get(ROW_BASE, 1)} holds {values.iloc[bad[0]]!r}.")
    if task == "classification":
        counts = values.value_counts()
        if len(counts) < 2:
            raise DataError(f"{source}, column {target!r} (the target) holds one class only ({counts.index[0]!r}); "
                            "classification needs at least two.")

"""Read rows from JSONL, CSV, Parquet and HF `save_to_disk` folders. Every failure names the file and the row."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from trainforge.errors import DataError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_kind(path: Path) -> str:
    if path.is_dir():
        if (
            (path / "dataset_info.json").is_file()
            or (path / "dataset_dict.json").is_file()
            or (path / "state.json").is_file()
        ):
            return "hf"
        raise DataError(
            f"Data folder {path} is not a Hugging Face `save_to_disk` folder (no dataset_info.json or dataset_dict.json)."
        )
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"Data file {path} has an unknown type {path.suffix!r}; expected one of {', '.join(sorted(SUFFIXES))} or an HF dataset folder."
        )
    return kind


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"Data file {path} is not UTF-8 text: invalid byte {raw[err.start]:#04x} on line {line}."
        ) from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


Numbered = list[tuple[int, dict[str, Any]]]  # (row number as the user sees it in the file, row)


def _read_jsonl(path: Path) -> Numbered:
    rows = []
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise DataError(
                f"Data file {path}, row {number}: not valid JSON ({err.msg} at column {err.colno})."
            ) from None
        except _DuplicateKey as err:
            raise DataError(
                f"Data file {path}, row {number}: duplicate key {err.args[0]!r} in one JSON object; "
                "JSON readers disagree on which value wins, so give each key once."
            ) from None
        except RecursionError:
            raise DataError(f"Data file {path}, row {number}: JSON nested too deeply to read.") from None
        if not isinstance(row, dict):
            raise DataError(
                f"Data file {path}, row {number}: expected a JSON object per line, got {type(row).__name__}."
            )
        rows.append((number, row))
    return rows


def _read_csv(path: Path) -> Numbered:
    text = _decode(path)
    try:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise DataError(f"Data file {path}: duplicate column names {dupes} in the header.")
        rows = []
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise DataError(f"Data file {path}, row {number}: more fields than the {len(header)} header columns.")
            rows.append((number, row))
        return rows
    except csv.Error as err:
        raise DataError(f"Data file {path}: malformed CSV ({err}).") from None


def _clean(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / arrow scalars and arrays
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _read_parquet(path: Path) -> Numbered:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - arrow raises many types for a bad file
        raise DataError(f"Data file {path} is not a readable Parquet file: {err}") from None
    return [(i, {k: _clean(v) for k, v in row.items()}) for i, row in enumerate(table.to_pylist(), start=1)]


def _read_hf(path: Path) -> Numbered:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"Data folder {path} could not be read as a Hugging Face dataset: {err}") from None
    if isinstance(ds, DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    return [(i, dict(r)) for i, r in enumerate(ds, start=1)]


def read_rows(path: str | Path, max_rows: int | None = None) -> Numbered:
    """All rows of a data file, in file order, each with the row number to quote in errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data file {path} does not exist.")
    kind = detect_kind(path)
    rows = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet, "hf": _read_hf}[kind](path)
    if not rows:
        raise DataError(f"Data file {path} holds no rows.")
    return rows[:max_rows] if max_rows else rows

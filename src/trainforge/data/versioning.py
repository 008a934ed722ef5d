"""Which data made the model: for each split a content fingerprint, its row count and its rows' ids (their row
numbers in the source), from whichever form a task's splits take: checked rows, a table with the positions each
split holds, or arrays. A run records them when it opens (run/directory.py): run.json's `data` block,
data_splits.json beside it, and MLflow dataset inputs when it finishes.

Every fingerprint depends on row order, as the language-model one does (data/arrow.py): the order decides the
split and the training batches, so reordered rows are other training data. It covers the rows' content (one
changed character changes it) and which rows of the source they are, not where the source lies: the same file
moved or checked out elsewhere gives the same fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:
    from trainforge.classical.data import Table
    from trainforge.data.splits import Splits

ROW_IDS_FILE = "data_splits.json"
PARTS = ("train", "validation", "test")
VOLATILE = frozenset({"where"})  # where a checked row was read (its file's path), not what it holds


@dataclass
class DataVersion:
    fingerprints: dict[str, str]  # each split that holds rows → its fingerprint
    rows: dict[str, int]  # split → rows it holds
    row_ids: dict[str, list]  # split → its rows' numbers in the source, in order

    def block(self) -> dict:
        """run.json's `data`. The row ids stay in their own file: `runs list` reads every run's run.json, and the
        ids of a large split run to megabytes."""
        return {"fingerprints": self.fingerprints, "rows": self.rows, "row_ids": ROW_IDS_FILE}


def _digest(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def _canonical(row: dict) -> bytes:
    kept = {key: value for key, value in row.items() if key not in VOLATILE}
    text = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8") + b"\n"


def rows_fingerprint(rows: Iterable[dict]) -> str:
    """Checked rows, each as canonical JSON (sorted keys, without `where`; its `row` number stays), in order."""
    return _digest(_canonical(row) for row in rows)


def of_splits(splits: Splits) -> DataVersion:
    """Checked rows (data/splits.py), each carrying its source row number (`row`). Splits kept on disk come
    fingerprinted as written (data/arrow.py); their row ids are read back (4 s for a million short chat rows)."""
    version = DataVersion({}, {}, {})
    for part in PARTS:
        rows = getattr(splits, part)
        version.rows[part], version.row_ids[part] = len(rows), [row["row"] for row in rows]
        if len(rows):
            version.fingerprints[part] = splits.report.fingerprints.get(part) or rows_fingerprint(rows)
    return version


def of_table(table: Table, parts: dict[str, np.ndarray]) -> DataVersion:
    """A table's splits, each given by its positions in `table.frame`: every column of its rows (pandas' row
    hashes), the column names and the row numbers, in order."""
    import pandas as pd

    version = DataVersion({}, {}, {})
    names = json.dumps([str(c) for c in table.frame.columns]).encode("utf-8")
    for part, at in parts.items():
        ids = table.numbers(at)
        version.rows[part], version.row_ids[part] = len(at), ids.tolist()
        if len(at):
            hashed = pd.util.hash_pandas_object(table.frame.iloc[at], index=False).to_numpy().astype("<u8")
            version.fingerprints[part] = _digest([names, hashed.tobytes(), ids.astype("<i8").tobytes()])
    return version


def of_arrays(x: dict[str, np.ndarray], y: dict[str, np.ndarray | None], at: dict[str, np.ndarray]) -> DataVersion:
    """Arrays read whole (images): each split's inputs and labels as stored, and its rows' positions in the
    source (numbered from 1, in the order read)."""
    version = DataVersion({}, {}, {})
    for part, positions in at.items():
        ids = np.asarray(positions, dtype="<i8") + 1
        version.rows[part], version.row_ids[part] = len(ids), ids.tolist()
        if len(ids):
            arrays = [x[part]] + ([] if y.get(part) is None else [y[part]])
            shapes = json.dumps([[a.dtype.str, a.shape] for a in arrays]).encode("utf-8")
            content = [np.ascontiguousarray(a).tobytes() for a in arrays]
            version.fingerprints[part] = _digest([shapes, *content, ids.tobytes()])
    return version

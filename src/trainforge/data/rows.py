"""Checked examples kept on disk: a memory-mapped Arrow file of one JSON example per row, read like a list (decoded
only when read), so that data larger than memory can be split, tokenized and evaluated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

BATCH = 1_000  # rows per Arrow record batch: large enough to amortize, small enough to stay flat in memory


def _encoded(example: dict) -> str:
    row = example.get("row")
    if row is not None and type(row) is not int:  # a JSON array's row number keeps its line: "3 (line 7)"
        example = {**example, "row": str(row)}
    return json.dumps(example, ensure_ascii=False)


def write_rows(path: Path, examples: Iterable[dict]) -> int:
    """Write `examples` as they come to an Arrow stream file at `path`; returns how many."""
    import pyarrow as pa

    schema = pa.schema([("example", pa.large_string())])
    examples, count = iter(examples), 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while chunk := [_encoded(example) for example in islice(examples, BATCH)]:
            writer.write_batch(pa.record_batch([pa.array(chunk, pa.large_string())], schema=schema))
            count += len(chunk)
    return count


def select(table, indices):
    """`table.select(indices)` without pickling the indices to name the result (seconds for a million)."""
    import hashlib

    import numpy as np

    chosen = np.asarray(indices, dtype=np.int64)
    name = hashlib.sha256(table._fingerprint.encode() + chosen.tobytes()).hexdigest()[:32]
    return table.select(chosen, new_fingerprint=name)


class RowView(Sequence):
    """A datasets.Dataset read like a list of row dicts (slices included), so code written for lists reads data
    kept on disk."""

    def __init__(self, table):
        self.table = table

    def _row(self, row: dict) -> dict:
        return row

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key):
        if isinstance(key, slice):
            columns = self.table[key]
            return [self._row(dict(zip(columns, values))) for values in zip(*columns.values())]
        if not -len(self) <= key < len(self):
            raise IndexError(f"row {key} of {len(self)}")
        return self._row(self.table[key % len(self)])

    def __iter__(self) -> Iterator[dict]:
        for batch in self.table.iter(batch_size=BATCH):
            yield from (self._row(dict(zip(batch, values))) for values in zip(*batch.values()))


class Rows(RowView):
    """The examples of an Arrow file written by `write_rows` (those at `indices`, in that order, when given)."""

    def __init__(self, path: Path, indices=None):
        from datasets import Dataset

        self.path, self.indices = Path(path), indices
        table = Dataset.from_file(str(path))
        super().__init__(table if indices is None else select(table, indices))

    def select(self, indices) -> Rows:
        chosen = indices if self.indices is None else [self.indices[i] for i in indices]
        return Rows(self.path, chosen)

    def _row(self, row: dict) -> dict:
        return json.loads(row["example"])

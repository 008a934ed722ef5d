"""Read rows from JSON (an array of objects, or an object holding one list of them), JSON Lines, CSV, Parquet,
Arrow, plain text (a document per line or per paragraph), each also gzip / zstd compressed; Hugging Face
`save_to_disk` folders; and Hub datasets (`hf:owner/name[:config][@split]`) when the Hub is on. Every failure
names the file and the row (for a JSON array: its index and the line it starts on)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from trainforge.errors import DataError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".txt": "txt",
}
COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
HUB_PREFIX = "hf:"
TEXT_UNITS = ("line", "paragraph")


class RowNumber(int):
    """A row's number in a JSON array file, printed with where it stands: `3 (array index 2, line 17)`."""

    line: int

    def __new__(cls, number: int, line: int):
        obj = super().__new__(cls, number)
        obj.line = line
        return obj

    def __str__(self) -> str:
        return f"{int(self)} (array index {int(self) - 1}, line {self.line})"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else int.__format__(self, spec)


Numbered = list[tuple[int, dict[str, Any]]]  # (row number as the user sees it in the file, row)


def split_suffix(path: Path) -> tuple[str, str | None]:
    """(the data suffix, the compression) of a file name: `train.jsonl.gz` → (`.jsonl`, `gzip`)."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSED.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compression


def _is_hf_folder(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _llamafactory_entries(path: Path) -> list[str] | None:
    """The dataset names of a LLaMA-Factory `dataset_info.json` (entries with `file_name`, `hf_hub_url`, ...)."""
    info = path / "dataset_info.json"
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = ("file_name", "hf_hub_url", "ms_hub_url", "script_url", "cloudfile_name")
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, dict) and any(k in v for k in keys) for v in data.values())
    ):
        return sorted(data)
    return None


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a data file, before it is opened: it is missing (with how to fetch it when DVC tracks
    it), or it is DVC's pointer file (`dvc add data.jsonl` writes data.jsonl.dvc; the data is the file beside it)."""
    if path.suffix == ".dvc":
        return (
            f"Data file {path} is DVC's pointer to the data, not the data; point the config at "
            f"{path.with_suffix('')} (`dvc pull` or `dvc checkout` puts it in the workspace)."
        )
    if not path.exists():
        pointer = path.with_name(path.name + ".dvc")
        fetch = f" DVC tracks it ({pointer}): `dvc pull {path}` fetches it." if pointer.is_file() else ""
        return f"Data file {path} does not exist.{fetch}"
    return None


def detect_kind(path: Path) -> str:
    if path.is_dir():
        if _is_hf_folder(path):
            return "hf"
        names = _llamafactory_entries(path)
        if names is not None:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise DataError(
                f"Data folder {path} is a LLaMA-Factory data folder: its dataset_info.json lists datasets. Point "
                f"`data.path` at one entry, e.g. `{path / 'dataset_info.json'}#{names[0]}` (entries: {shown})."
            )
        raise DataError(
            f"Data folder {path} is not a Hugging Face `save_to_disk` folder (no state.json or dataset_dict.json)."
        )
    suffix, _ = split_suffix(path)
    kind = SUFFIXES.get(suffix)
    if kind is None:
        raise DataError(
            f"Data file {path} has an unknown type {suffix or path.suffix!r}; expected one of "
            f"{', '.join(sorted(SUFFIXES))} (each optionally .gz / .zst compressed) or an HF dataset folder."
        )
    return kind


def _raw_bytes(path: Path) -> bytes:
    """The whole file, decompressed (for layouts read whole: a JSON array, a compressed Parquet or Arrow file)."""
    with _binary(path) as stream:
        return stream.read()


@contextmanager
def _binary(path: Path) -> Iterator:
    """The file's bytes as a stream, decompressed on the fly; a corrupt compressed file is a DataError."""
    _, compression = split_suffix(path)
    if compression is None:
        with open(path, "rb") as stream:
            yield stream
        return
    import pyarrow as pa

    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            yield stream
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"Data file {path} could not be decompressed as {compression}: {err}") from None


def _decode_line(path: Path, raw: bytes, number: int) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"Data file {path} is not UTF-8 text: invalid byte {raw[err.start]:#04x} on line {number}."
        ) from None
    return (line.removeprefix("\ufeff") if number == 1 else line).removesuffix("\r")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The decoded lines of a text file, numbered from 1, read as a stream: memory stays flat whatever the file's
    size. A byte that is not UTF-8 names its line."""
    number, rest = 0, b""
    with _binary(path) as stream:
        while chunk := stream.read(1 << 20):
            *lines, rest = (rest + chunk).split(b"\n")
            for raw in lines:
                number += 1
                yield number, _decode_line(path, raw, number)
    if rest:
        yield number + 1, _decode_line(path, rest, number + 1)


def _decode(path: Path) -> str:
    raw = _raw_bytes(path)
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


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _json_value(path: Path, where: str, text: str, start: int = 0) -> tuple[Any, int]:
    """One JSON value of `text` from `start`: (value, end offset). Errors name the file and `where`."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as err:
        raise DataError(
            f"Data file {path}, {where}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})."
        ) from None
    except _DuplicateKey as err:
        raise DataError(
            f"Data file {path}, {where}: duplicate key {err.args[0]!r} in one JSON object; JSON readers disagree on "
            "which value wins, so give each key once."
        ) from None
    except RecursionError:
        raise DataError(f"Data file {path}, {where}: JSON nested too deeply to read.") from None


def _json_lines(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, dict]]:
    for number, line in lines:
        if not line.strip():
            continue
        row, end = _json_value(path, f"row {number}", line.strip())
        if end != len(line.strip()):
            raise DataError(f"Data file {path}, row {number}: not valid JSON (extra data after the object).")
        if not isinstance(row, dict):
            raise DataError(
                f"Data file {path}, row {number}: expected a JSON object per line, got {type(row).__name__}."
            )
        yield number, row


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """A JSON array of objects (LLaMA-Factory's and Axolotl's alpaca files), an object holding one list of rows
    (`{"data": [...]}`), or JSON Lines under a .json name (as the `datasets` json loader reads it)."""
    text = _decode(path)
    start = _skip_space(text, 0)
    if start == len(text):
        return
    if text[start] == "{":
        first, end = _json_value(path, "line 1", text, start)
        if _skip_space(text, end) < len(text):  # more values follow: JSON Lines
            yield from _json_lines(path, enumerate(text.split("\n"), start=1))
            return
        lists = {k: v for k, v in first.items() if isinstance(v, list)}
        rows = next(iter(lists.values()), None)
        if len(lists) == 1 and rows and all(isinstance(r, dict) for r in rows):
            yield from enumerate(rows, start=1)
        else:
            yield 1, first  # one row
        return
    if text[start] != "[":
        raise DataError(
            f"Data file {path}: expected a JSON array of objects (or JSON Lines), found {text[start : start + 20]!r} "
            "at the start."
        )
    at, line, counted, count = start + 1, 1, 0, 0
    while True:
        at = _skip_space(text, at)
        if at < len(text) and text[at] == "]":
            return
        line += text.count("\n", counted, at)
        counted = at
        count += 1
        number = RowNumber(count, line)
        row, at = _json_value(path, f"row {number}", text, at)
        if not isinstance(row, dict):
            raise DataError(f"Data file {path}, row {number}: expected a JSON object, got {type(row).__name__}.")
        yield number, row
        at = _skip_space(text, at)
        if at < len(text) and text[at] == ",":
            at += 1
        elif not (at < len(text) and text[at] == "]"):
            raise DataError(f"Data file {path}, after row {number}: expected `,` or `]` in the JSON array.")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        reader = csv.DictReader(line + "\n" for _, line in _lines(path))
        header = reader.fieldnames or []
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise DataError(f"Data file {path}: duplicate column names {dupes} in the header.")
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise DataError(f"Data file {path}, row {number}: more fields than the {len(header)} header columns.")
            yield number, row
    except csv.Error as err:
        raise DataError(f"Data file {path}: malformed CSV ({err}).") from None


def _text_rows(path: Path, unit: str = "line") -> Iterator[tuple[int, dict]]:
    """One document per non-empty line, or (`paragraph`) per block of lines between blank lines; the row number is
    the line the document starts on."""
    block, first = [], 0
    for number, line in _lines(path):
        if unit == "line":
            if line.strip():
                yield number, {"text": line}
        elif line.strip():
            block, first = block + [line], first or number
        elif block:
            yield first, {"text": "\n".join(block)}
            block, first = [], 0
    if block:
        yield first, {"text": "\n".join(block)}


def _clean(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / arrow scalars and arrays
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _batch_rows(batches) -> Iterator[tuple[int, dict]]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, {k: _clean(v) for k, v in row.items()}


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, compression = split_suffix(path)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(_raw_bytes(path)) if compression else str(path))
        batches = parquet.iter_batches(batch_size=4096)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - arrow raises many types for a bad file
        raise DataError(f"Data file {path} is not a readable Parquet file: {err}") from None
    yield from _batch_rows(batches)


def _arrow_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """An Arrow IPC file or stream (what `datasets` caches and `save_to_disk` writes), read batch by batch."""
    import pyarrow as pa

    _, compression = split_suffix(path)
    for open_reader in (pa.ipc.open_file, pa.ipc.open_stream):
        try:
            reader = open_reader(pa.BufferReader(_raw_bytes(path)) if compression else pa.memory_map(str(path)))
        except pa.ArrowInvalid:
            continue
        if open_reader is pa.ipc.open_file:
            yield from _batch_rows(reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            yield from _batch_rows(reader)
        return
    raise DataError(f"Data file {path} is not an Arrow IPC file or stream.")


def _hf_rows(path: Path) -> Iterator[tuple[int, dict]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"Data folder {path} could not be read as a Hugging Face dataset: {err}") from None
    if isinstance(ds, DatasetDict):
        ds = ds["train" if "train" in ds else next(iter(ds))]
    for number, row in enumerate(ds, start=1):
        yield number, dict(row)


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is off: trainforge's default where the user set nothing (no hub reachable on
    most of our machines, and a look-up hangs before it fails)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def parse_hub_id(source: str) -> tuple[str, str | None, str]:
    """`hf:owner/name[:config][@split]` → (name, config, split); split defaults to train."""
    spec = source[len(HUB_PREFIX) :]
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    if not name or name.count("/") > 1:
        raise DataError(
            f"Data source {source!r}: expected `hf:owner/name[:config][@split]`, e.g. `hf:tatsu-lab/alpaca@train`."
        )
    return name, config or None, split or "train"


def _hub_rows(source: str) -> Iterator[tuple[int, dict]]:
    name, config, split = parse_hub_id(source)
    if hub_offline():
        raise DataError(
            f"Data source {source}: the Hugging Face Hub is off here (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, "
            "trainforge's default when they are not set). Set both to 0 to download it, or save it with "
            "`datasets.load_dataset(...).save_to_disk(folder)` on a machine with the Hub and point `data.path` at "
            "that folder."
        )
    from datasets import load_dataset

    try:
        ds = load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - network, auth and missing-split errors of every kind
        raise DataError(
            f"Data source {source}: the Hub dataset could not be loaded: {type(err).__name__}: {err}"
        ) from None
    for number, row in enumerate(ds, start=1):
        yield number, dict(row)


def iter_rows(path: str | Path, text_unit: str = "line") -> Iterator[tuple[int, dict]]:
    """The rows of a data source as a stream, in file order, each with the row number to quote in errors (a JSON
    array is parsed whole, element by element)."""
    if isinstance(path, str) and path.startswith(HUB_PREFIX):
        yield from _hub_rows(path)
        return
    path = Path(path)
    if problem := file_problem(path):
        raise DataError(problem)
    kind = detect_kind(path)
    if kind == "txt":
        yield from _text_rows(path, text_unit)
    elif kind == "jsonl":
        yield from _json_lines(path, _lines(path))
    else:
        yield from {
            "json": _json_rows,
            "csv": _csv_rows,
            "parquet": _parquet_rows,
            "arrow": _arrow_rows,
            "hf": _hf_rows,
        }[kind](path)


def read_rows(path: str | Path, max_rows: int | None = None, text_unit: str = "line") -> Numbered:
    """All rows of a data source (the first `max_rows`), in file order, each with the row number to quote in
    errors. `text_unit`: how a .txt file is cut into documents (`line` or `paragraph`)."""
    rows = list(itertools.islice(iter_rows(path, text_unit), max_rows))
    if not rows:
        raise DataError(f"Data file {path} holds no rows.")
    return rows

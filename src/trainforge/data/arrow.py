"""Preparation on Arrow, for data of any size: the checked examples, then their tokens, are written to memory-mapped
Arrow files (tokens by `datasets.map`, batched, in several processes for large data), so memory stays flat in the
number of rows; both are cached under keys made of the data files, the tokenizer and the preparation settings, so a
second run on the same data reads them back in seconds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console

from trainforge.config.schema import DataConfig
from trainforge.data.llamafactory import is_entry, resolve
from trainforge.data.readers import HUB_PREFIX
from trainforge.data.report import DataReport
from trainforge.data.rows import BATCH, Rows, RowView, select, write_rows
from trainforge.data.splits import Splits, load_splits
from trainforge.data.tokenize import (
    Masking,
    account,
    check_objective,
    clm_blocks,
    document_tokens,
    example_text,
    learns,
    mask_rng,
    tokenize_rows,
)
from trainforge.errors import DataError, RunError

PREP_VERSION = 3  # raise when what is written changes: older cache entries are then never read
PARALLEL_ROWS = 20_000  # below this, starting worker processes costs more than they save
PARTS = ("train", "validation", "test")
console = Console(stderr=True)


@dataclass(frozen=True)
class TokenSettings:
    objective: str
    max_length: int
    mlm_probability: float
    seed: int  # held-out masked-LM rows get a fixed mask from it
    masking: Masking


@dataclass
class Tokenized:
    parts: dict[str, Sequence]  # part → its kept token rows (on disk), or [] when the part is empty
    report: DataReport  # rows cut or dropped by tokenization
    end_of_turn_share: float | None  # share of training rows whose labels hold the template's end-of-turn token
    cached: bool


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stamp(source: str) -> list:
    """What tells a data source's contents apart, cheaply: each file's path, size and modification time."""
    if source.startswith(HUB_PREFIX):
        return [source]
    if is_entry(source):
        registry = source.split("#")[0]
        return _stamp(registry) + _stamp(str(resolve(source).path))
    path = Path(source)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def examples_key(cfg: DataConfig, seed: int) -> str:
    sources = [cfg.path, cfg.train, cfg.validation, cfg.test, *(s.path for s in cfg.sources)]
    bundled = None
    if cfg.task or any(s.task for s in cfg.sources):  # generated rows change with their generator's code
        from trainforge.data import tasks

        bundled = hashlib.sha256(Path(tasks.__file__).read_bytes()).hexdigest()
    settings = cfg.model_dump(mode="json", exclude={"cache", "num_proc"})
    return _key(PREP_VERSION, settings, seed, [_stamp(s) for s in sources if s], bundled)


def _cached(folder: Path, build: Callable[[Path], dict], fresh: bool) -> tuple[dict, bool]:
    """The description (meta.json) of a finished cache folder, and whether it was there already. A missing (or,
    with `fresh`, existing) one is built in a temporary folder renamed into place, so an interrupted build leaves
    nothing half-written to be read later."""
    meta = folder / "meta.json"
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    elif meta.is_file():
        return json.loads(meta.read_text()), True
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    created = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]  # deepest first
    shutil.rmtree(building, ignore_errors=True)
    try:
        building.mkdir(parents=True)
        (building / "meta.json").write_text(json.dumps(build(building)))
        try:
            os.replace(building, folder)
        except OSError:  # another run on the same data finished first: its folder serves
            if not meta.is_file():
                raise
            shutil.rmtree(building)
    except BaseException as err:  # bad data: no trace of the attempt (not even an empty runs folder)
        shutil.rmtree(building, ignore_errors=True)
        for made in created:
            with contextlib.suppress(OSError):
                made.rmdir()
        if isinstance(err, OSError):  # a read-only or full runs folder: say so before any work starts
            raise RunError(
                f"Cannot write the prepared data under {folder.parent}: {err.strerror or err}. Make it writable "
                "(with free space), or set `tracking.runs_dir` elsewhere."
            ) from None
        raise
    return json.loads(meta.read_text()), False


def _stored(rows, folder: Path, part: str) -> dict:
    """Where a split's examples are kept: a selection of a file written while reading, else a file of its own."""
    if not isinstance(rows, Rows):
        write_rows(folder / f"{part}.arrow", rows)
        rows = Rows(folder / f"{part}.arrow")
    indices = None
    if rows.indices is not None:
        import numpy as np

        indices = f"{part}.npy"
        np.save(folder / indices, np.asarray(rows.indices, dtype=np.int64))
    return {"file": rows.path.name, "indices": indices}


def fingerprint(folder: Path, stored: dict) -> str:
    """A split's content: its checked rows as written (one changed character changes it) and which of them it
    holds, in order. Row order counts: the split and the training order follow it, so reordered rows are other
    training data."""
    import numpy as np

    digest = hashlib.sha256()
    with open(folder / stored["file"], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if stored["indices"]:
        digest.update(np.load(folder / stored["indices"]).astype("<i8").tobytes())
    return digest.hexdigest()[:16]


def _rows(folder: Path, stored: dict) -> Rows:
    import numpy as np

    indices = np.load(folder / stored["indices"]) if stored["indices"] else None
    return Rows(folder / stored["file"], indices)


def arrow_splits(cfg: DataConfig, seed: int, cache: Path) -> Splits:
    """`load_splits`, with the checked examples on disk under `cache` (read back when the data and its settings
    have not changed): reading and splitting one file of any size keeps memory flat."""

    def build(folder: Path) -> dict:
        numbers = count()

        def keep(examples) -> Rows:
            path = folder / f"read{next(numbers)}.arrow"
            write_rows(path, examples)
            return Rows(path)

        splits = load_splits(cfg, seed, keep=keep)
        parts = {part: _stored(getattr(splits, part), folder, part) for part in PARTS}
        splits.report.fingerprints = {
            part: fingerprint(folder, stored) for part, stored in parts.items() if len(getattr(splits, part))
        }
        described = {"source": splits.source, "layout": splits.layout, "layouts": splits.layouts}
        return {**described, "parts": parts, "report": asdict(splits.report)}

    key = examples_key(cfg, seed)
    started = time.perf_counter()
    meta, cached = _cached(cache / f"examples-{key}", build, fresh=not cfg.cache)
    folder = cache / f"examples-{key}"
    parts = [_rows(folder, meta["parts"][part]) for part in PARTS]
    if not cached and len(parts[0]) >= PARALLEL_ROWS:
        console.print(f"[cyan]data:[/] {sum(map(len, parts))} rows read in {time.perf_counter() - started:.0f} s")
    report = DataReport(**meta["report"])
    return Splits(*parts, meta["source"], meta["layout"], report, meta["layouts"], key)


@contextlib.contextmanager
def _progress(shown: bool):
    """The library's progress bar for one long step (they are off otherwise: one bar, the training one)."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    if shown:
        datasets.enable_progress_bars()
    try:
        yield
    finally:
        if not was:
            datasets.disable_progress_bars()


def _tokenize_batch(batch, indices, tokenizer, settings: TokenSettings, mask_seed, end_of_turn) -> dict:
    """Token rows of a batch of examples, with what the report needs: whether each was cut (`truncated`), still
    learns something (`kept`), holds the end-of-turn token in its labels (`eot`), and its row number (`where`)."""
    out = defaultdict(list)
    examples = [json.loads(text) for text in batch["example"]]
    out["where"] = [json.dumps(example.get("row", index + 1)) for example, index in zip(examples, indices)]
    s = settings
    if s.objective == "clm":  # each document's tokens; blocks are cut from them in order, afterwards
        out["input_ids"] = [document_tokens(tokenizer, example_text(tokenizer, example)) for example in examples]
        return dict(out)
    rngs = [mask_rng(mask_seed, index + 1) for index in indices]
    for row in tokenize_rows(tokenizer, examples, s.objective, s.max_length, s.mlm_probability, rngs, s.masking):
        out["truncated"].append(row.pop("truncated"))
        out["kept"].append(learns(row, s.objective))
        out["eot"].append(end_of_turn is not None and end_of_turn in row.get("labels", ()))
        for name, value in row.items():
            out[name].append(value)
    return dict(out)


def _clm_blocks(documents, path: Path, block_size: int, report: DataReport) -> int:
    """Continued pretraining: documents' tokens cut into blocks as they come, written to `path`; returns how many
    tokens."""
    import pyarrow as pa

    ids = (row for batch in documents.iter(batch_size=BATCH) for row in batch["input_ids"])
    blocks, tokens = clm_blocks(ids, block_size, report), 0
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while chunk := [block for _, block in zip(range(BATCH), blocks)]:
            column = pa.array(chunk, pa.list_(pa.int32()))
            writer.write_batch(pa.record_batch([column, column], schema=schema))
            tokens += sum(map(len, chunk))
    return tokens


def _part_tokens(table, folder: Path, part: str, tokenizer, settings, end_of_turn, num_proc) -> tuple[dict, dict]:
    """One split's token rows written under `folder`; (how to read them back, facts for the report)."""
    import numpy as np

    procs = num_proc or (len(os.sched_getaffinity(0)) if len(table) >= PARALLEL_ROWS else 1)
    mask_seed = None if part == "train" else settings.seed
    with _progress(len(table) >= PARALLEL_ROWS):
        tokens = table.map(
            _tokenize_batch,
            batched=True,
            batch_size=BATCH,
            with_indices=True,
            fn_kwargs=dict(tokenizer=tokenizer, settings=settings, mask_seed=mask_seed, end_of_turn=end_of_turn),
            remove_columns=table.column_names,
            num_proc=procs if procs > 1 else None,
            cache_file_name=str(folder / f"{part}-tokens.arrow"),
            desc=f"tokenizing {part} ({procs} process{'es' if procs > 1 else ''})",
        )
    files = [Path(f["filename"]).name for f in tokens.cache_files]
    found = DataReport()
    if settings.objective == "clm":
        blocks = f"{part}-blocks.arrow"
        if _clm_blocks(tokens, folder / blocks, settings.max_length, found) < 2:
            raise DataError("The text corpus tokenizes to fewer than 2 tokens; there is nothing to learn from.")
        return {"files": [blocks], "kept": None, "columns": ["input_ids", "labels"]}, {
            "report": asdict(found),
            "eot": 0,
        }
    flags = tokens.data.select(["truncated", "kept"])
    truncated = flags.column("truncated").to_numpy(zero_copy_only=False)
    kept = flags.column("kept").to_numpy(zero_copy_only=False)
    for flagged, cut, keeps in ((np.flatnonzero(truncated), True, True), (np.flatnonzero(~kept), False, False)):
        for where in select(tokens, flagged)["where"] if len(flagged) else []:
            account(found, json.loads(where), cut, keeps, settings.max_length)
    if not kept.any():
        raise DataError(
            f"No example keeps an assistant token within training.max_length={settings.max_length}; raise it."
        )
    kept_file = None
    if not kept.all():
        kept_file = f"{part}-kept.npy"
        np.save(folder / kept_file, np.flatnonzero(kept))
    eot = int(tokens.data.column("eot").to_numpy(zero_copy_only=False)[kept].sum())
    columns = ["input_ids"] if "labels" not in tokens.column_names else ["input_ids", "labels"]
    return {"files": files, "kept": kept_file, "columns": columns}, {"report": asdict(found), "eot": eot}


def _part_rows(folder: Path, stored: dict):
    import numpy as np
    from datasets import Dataset, concatenate_datasets

    rows = concatenate_datasets([Dataset.from_file(str(folder / name)) for name in stored["files"]])
    if stored["kept"]:
        rows = select(rows, np.load(folder / stored["kept"]))
    return RowView(rows.select_columns(stored["columns"]))


def arrow_tokens(
    splits: Splits, tokenizer, settings: TokenSettings, cache: Path, fresh: bool, num_proc: int | None, end_of_turn
) -> Tokenized:
    """Token ids and labels of every split, on disk under `cache` (read back when the examples, the tokenizer and
    `settings` have not changed); rows cut or left with nothing to learn are counted in the report by row number.
    `end_of_turn`: the template's end-of-turn token (as `end_of_turn` finds it), whose share of the training rows
    is counted."""
    from datasets.fingerprint import Hasher

    check_objective(tokenizer, settings.objective)

    def build(folder: Path) -> dict:
        meta = {"parts": {}, "reports": {}, "eot": 0}
        for part in PARTS:
            rows = getattr(splits, part)
            if not len(rows):
                continue
            if not isinstance(rows, Rows):  # examples changed on the way (unpaired answers to learn)
                write_rows(folder / f"{part}-examples.arrow", rows)
                rows = Rows(folder / f"{part}-examples.arrow")
            eot = end_of_turn[0] if end_of_turn else None
            stored, facts = _part_tokens(rows.table, folder, part, tokenizer, settings, eot, num_proc)
            meta["parts"][part], meta["reports"][part] = stored, facts["report"]
            meta["eot"] += facts["eot"] if part == "train" else 0
        return meta

    key = _key(PREP_VERSION, splits.key, Hasher.hash(tokenizer), asdict(settings))
    meta, cached = _cached(cache / f"tokens-{key}", build, fresh)
    folder = cache / f"tokens-{key}"
    report = DataReport()
    for part, found in meta["reports"].items():
        report.merge(DataReport(**found), "" if part == "train" else part)
    parts = {part: _part_rows(folder, meta["parts"][part]) if part in meta["parts"] else [] for part in PARTS}
    train = parts["train"]
    share = meta["eot"] / len(train) if len(train) else None
    return Tokenized(parts, report, share, cached)

"""`trainforge data audit`: exact and near duplicates, rows of validation / test that also occur in train
(leakage), and the shape of the data (lengths in words and tokens, rows too short or too long, answer lengths,
turns, system prompts, labels, the chosen answers' length bias), with histograms for the plots of audit.html
(tracking/audit_html.py renders them). Tables (classification, regression, clustering) get their own audit:
duplicate rows, equal features with other labels, missing values, class balance, test rows also in train.

Rows are judged as cleaning judges them (data/similarity.py), and duplicates counted by the rule cleaning drops
them by (data/clean.py), so `data clean` drops what the audit counts."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from trainforge.data.clean import Cleaner, CleanSettings
from trainforge.data.similarity import WORD, NearIndex, detect_language, exact_key, row_text, token_counts
from trainforge.errors import ConfigError, DataError

PARTS = ("train", "validation", "test")
SHOWN_ROWS = 20  # row numbers kept per finding
HISTOGRAM_BINS = 30
DEFAULT_TOKENIZER = "smollm2-135m-instruct"
DEFAULT_MAX_TOKENS = 2048
TOKENIZER_TASKS = ("lm", "text-classification", "multi-task", "reward")  # a pretrained `model.name` has a tokenizer
TABLE_TASKS = ("classification", "regression", "clustering")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
TARGET_NAMES = ("target", "label", "class", "y")  # a table file's label column, unless --target names it
MAX_CLASSES = 20  # a table file's numeric target with more distinct values is a number, not a class


@dataclass(frozen=True)
class AuditSettings:
    threshold: float = 0.8  # estimated Jaccard similarity of word shingles that makes two rows near duplicates
    count_tokens: bool = True
    model: str | None = None  # the tokenizer; None: the config's model, for a file DEFAULT_TOKENIZER
    min_tokens: int = 1  # rows with fewer tokens are too short (1: empty rows)
    max_tokens: int | None = None  # rows with more are too long; None: the config's max_length, else DEFAULT_MAX_TOKENS
    target: str | None = None  # a table file's label column; None: the first of TARGET_NAMES it has


def _duplicates(examples: list[dict], texts: list[str], settings: AuditSettings) -> tuple[dict, NearIndex]:
    """Exact and near duplicates within one split, counted by the rule `data clean` drops them by (so cleaning
    drops exactly what the audit counts), and the split's index of kept rows (for leakage)."""
    cleaner = Cleaner(CleanSettings(near_threshold=settings.threshold), "", None)
    for _ in cleaner.rows((e.get("row", n), text, None) for n, (e, text) in enumerate(zip(examples, texts), 1)):
        pass
    found = {}
    for reason in ("exact_duplicate", "near_duplicate"):
        rows = [d["row"] for d in cleaner.dropped if d["reason"] == reason]
        found |= {f"{reason}s": len(rows), f"{reason}_rows": rows[:SHOWN_ROWS]}
    return found, cleaner.index


def _leaks(examples: list[dict], texts: list[str], train_keys: set[str], train_index: NearIndex) -> dict:
    """Rows that also occur in train: exactly (case and whitespace aside), or nearly."""
    exact, near = [], []
    keys = [exact_key(t) for t in texts]
    for example, key, signature in zip(examples, keys, train_index.signatures(texts)):
        where = example.get("row")
        if key in train_keys:
            exact.append(where)
        elif train_index.near(signature):
            near.append(where)
    return {"exact": len(exact), "exact_rows": exact[:SHOWN_ROWS], "near": len(near), "near_rows": near[:SHOWN_ROWS]}


def _spread(values: Iterable[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _histogram(values: list[float]) -> dict:
    """Bin edges and counts, the plots' data: small in audit.json whatever the row count. Whole numbers in a
    narrow range (turns, short lengths) get one bin each."""
    import numpy as np

    if not values:
        return {}
    low, high = min(values), max(values)
    whole = high - low < HISTOGRAM_BINS and all(float(v).is_integer() for v in values)
    counts, edges = np.histogram(values, bins=np.arange(low, high + 2) - 0.5 if whole else HISTOGRAM_BINS)
    return {"edges": [round(e, 3) for e in edges.tolist()], "counts": counts.tolist()}


def answer_text(example: dict) -> str | None:
    """What a normalized example teaches the model to answer: a pair's chosen answer, a completion, the assistant's
    messages, the segments that train, a seq2seq target; None where the layout has no answer (text, prompt-only)."""
    for key in ("chosen", "completion", "target"):
        if key in example:
            return row_text({"answer": example[key]})
    if isinstance(example.get("messages"), list):
        return row_text({"answer": [m for m in example["messages"] if m.get("role") == "assistant"]})
    if isinstance(example.get("segments"), list):
        return row_text({"answer": [s["text"] for s in example["segments"] if s.get("train")]})
    return None


def _lengths(examples: list[dict], texts: list[str], settings: AuditSettings, tokenizer) -> tuple[dict, dict]:
    """Lengths in words and, with a tokenizer, in tokens with the rows outside [min_tokens, max_tokens]; the
    answers' lengths; and histograms (in tokens when counted, else words)."""
    words = [len(WORD.findall(t)) for t in texts]
    answers = [a for a in map(answer_text, examples) if a is not None]
    if tokenizer is None:
        unit, lengths, answer_lengths = "words", words, [len(WORD.findall(a)) for a in answers]
    else:
        unit, lengths, answer_lengths = "tokens", token_counts(tokenizer, texts), token_counts(tokenizer, answers)
    found: dict = {"words": _spread(words)}
    histograms = {"length": {"unit": unit, **_histogram(lengths)}}
    if tokenizer is not None:
        numbers = [e.get("row", n) for n, e in enumerate(examples, start=1)]
        short = [n for n, k in zip(numbers, lengths) if k < settings.min_tokens]
        long = [n for n, k in zip(numbers, lengths) if settings.max_tokens is not None and k > settings.max_tokens]
        found["tokens"] = _spread(lengths)
        found["too_short"] = {"count": len(short), "rows": short[:SHOWN_ROWS]}
        found["too_long"] = {"count": len(long), "rows": long[:SHOWN_ROWS]}
    if answers:
        found["answer_length"] = {"unit": unit, **_spread(answer_lengths)}
        histograms["answer_length"] = {"unit": unit, **_histogram(answer_lengths)}
    return found, histograms


def _shape(examples: list[dict], texts: list[str], settings: AuditSettings, tokenizer) -> dict:
    """Lengths (see `_lengths`), empty rows, the languages (the 10 commonest), and what the layout has: turns and
    system prompts, labels, the share of pairs whose chosen answer is the longer one; `histograms` for the plots."""
    lengths, histograms = _lengths(examples, texts, settings, tokenizer)
    shape = {
        "rows": len(examples),
        "empty": sum(1 for t in texts if not WORD.search(t)),
        **lengths,
        "languages": dict(Counter(detect_language(t) for t in texts).most_common(10)),
    }
    chats = [e["messages"] for e in examples if isinstance(e.get("messages"), list)]
    if chats:
        turns = [len(m) for m in chats]
        shape["turns"] = _spread(turns)
        histograms["turns"] = {"unit": "turns", **_histogram(turns)}
        systems = Counter(m[0].get("content", "") for m in chats if m and m[0].get("role") == "system")
        shape["system_prompts"] = {"rows_with_one": sum(systems.values()), "distinct": len(systems)}
    labels = Counter(str(e["label"]) for e in examples if "label" in e)
    if labels:
        shape["labels"] = dict(labels.most_common())
    pairs = [e for e in examples if "chosen" in e and "rejected" in e]
    if pairs:
        longer = sum(1 for e in pairs if len(row_text({"a": e["chosen"]})) > len(row_text({"a": e["rejected"]})))
        shape["chosen_longer_share"] = round(longer / len(pairs), 4)
    shape["histograms"] = histograms
    return shape


def audit_splits(splits: dict[str, list[dict]], settings: AuditSettings = AuditSettings(), tokenizer=None) -> dict:
    """The audit of named splits (normalized examples); leakage is checked against `train` when there is one.
    With a tokenizer, lengths are counted in tokens too."""
    report: dict = {"settings": settings.__dict__, "splits": {}}
    train_index = train_keys = None
    for part, examples in sorted(splits.items(), key=lambda item: item[0] != "train"):
        texts = [row_text(e) for e in examples]
        duplicates, index = _duplicates(examples, texts, settings)
        report["splits"][part] = {**_shape(examples, texts, settings, tokenizer), **duplicates}
        if part == "train":
            train_index, train_keys = index, {exact_key(t) for t in texts}
        elif train_index is not None:
            report["splits"][part]["in_train"] = _leaks(examples, texts, train_keys, train_index)
    return report


def _token_settings(settings: AuditSettings, config=None) -> tuple[AuditSettings, str]:
    """`settings` with the tokenizer and the too-long bound filled in (as given, else the config's, else a file's
    defaults), and a note saying which."""
    if not settings.count_tokens:
        if settings.model:
            raise ConfigError(
                f"--model {settings.model} names the tokenizer that counts tokens, and --no-tokens turns counting "
                "off; give one of them."
            )
        return (
            settings,
            "tokens not counted (--no-tokens): lengths are in words, and no row is judged too short or too long",
        )
    from trainforge.config.schema import is_nn_run

    model, whose = settings.model, "--model"
    pretrained = config is not None and config.model.name != "scratch" and not is_nn_run(config.task, config.model.name)
    if model is None and pretrained and config.task in TOKENIZER_TASKS:
        model, whose = config.model.name, "the config's model"
    elif model is None:
        model = DEFAULT_TOKENIZER
        whose = (
            "the default"
            if config is None
            else f"the default: the config's model {config.model.name} has no pretrained one"
        )
    bound, where = settings.max_tokens, "--max-tokens"
    if bound is None and config is not None:
        key = "reward" if config.task == "reward" else "training"
        bound, where = getattr(config, key).max_length, f"the config's {key}.max_length"
    elif bound is None:
        bound, where = DEFAULT_MAX_TOKENS, "the default for a data file"
    short = "empty" if settings.min_tokens == 1 else f"under {settings.min_tokens} tokens"
    note = (
        f"tokens counted with {model} ({whose}) in the rows' text, without a chat template's tokens; too short: "
        f"{short}, too long: over {bound} tokens ({where})"
    )
    return replace(settings, model=model, max_tokens=bound), note


def _tokenizer(settings: AuditSettings):
    from trainforge.models import load_tokenizer

    return load_tokenizer(settings.model) if settings.count_tokens else None


NOT_FOR_TABLES = (
    "near duplicates (MinHash of word shingles), lengths and languages measure text: not audited for a table"
)


def _table_split(frame, at, features: list[str], target: str | None, classes: bool, row: Callable[[int], int]) -> dict:
    """One split of a table (`at`: positions in `frame`): duplicate rows (features and target alike), rows whose
    features equal an earlier row's under another label, missing values per column, the labels or the target's
    spread."""
    part = frame.iloc[at]

    def rows(mask) -> list[int]:
        return [row(int(position)) for position in at[mask][:SHOWN_ROWS]]

    exact = part.duplicated(subset=[*features, *([target] if target else [])]).to_numpy()
    found = {"rows": len(at), "exact_duplicates": int(exact.sum()), "exact_duplicate_rows": rows(exact)}
    if target:
        conflicting = part.duplicated(subset=features).to_numpy() & ~exact
        found |= {"conflicting_labels": int(conflicting.sum()), "conflicting_label_rows": rows(conflicting)}
        values = part[target].dropna()
        if classes:
            found["labels"] = {str(label): int(n) for label, n in values.value_counts().items()}
        else:
            numbers = values.astype(float).tolist()
            found["target"] = _spread(numbers)
            found["histograms"] = {"target": {"unit": target, **_histogram(numbers)}}
    missing = part.isna()
    found["missing"] = {str(column): int(n) for column, n in missing.sum().items() if n}
    found["rows_with_missing"] = int(missing.any(axis=1).sum())
    return found


def audit_table(frame, parts: dict, features: list[str], target: str | None, classes: bool, row: Callable) -> dict:
    """The audit of a table's splits (`parts`: split → positions in `frame`, train first; `row`: a position's row
    number as the user sees it). A validation / test row whose features all equal a training row's is a leak,
    whatever its label."""
    import numpy as np
    import pandas as pd

    def keys(at) -> np.ndarray:
        return pd.util.hash_pandas_object(frame.iloc[at][features], index=False).to_numpy()

    splits: dict = {}
    train = keys(parts["train"]) if "train" in parts else None
    for part, at in parts.items():
        splits[part] = _table_split(frame, at, features, target, classes, row)
        if part != "train" and train is not None:
            leaked = np.isin(keys(at), train)
            rows = [row(int(position)) for position in at[leaked][:SHOWN_ROWS]]
            splits[part]["in_train"] = {"exact": int(leaked.sum()), "exact_rows": rows}
    return {"target": target, "features": len(features), "splits": splits}


def _table_file(source: str) -> bool:
    """A .csv / .tsv / .parquet file whose columns fit no text layout (iris.csv, not an alpaca .csv) is a table."""
    from trainforge.classical.data import read_table
    from trainforge.data.formats import LAYOUTS

    if Path(source).suffix.lower() not in TABLE_SUFFIXES:
        return False
    columns = set(read_table(source, max_rows=1).columns)
    return not any(signature <= columns for layout in LAYOUTS.values() for signature in layout.signatures)


def _audit_table_file(source: str, settings: AuditSettings) -> dict:
    """Every row of a table file as one split; the target is --target, else a column named as in TARGET_NAMES."""
    import numpy as np
    import pandas as pd

    from trainforge.classical.data import Table, missing_columns_error, read_table

    frame = read_table(source)
    notes = [NOT_FOR_TABLES]
    target = settings.target or next((c for c in frame.columns if c.lower() in TARGET_NAMES), None)
    if target is None:
        notes.append(
            f"no target column (none is named {', '.join(TARGET_NAMES)}; --target names it): class balance and "
            "conflicting labels not audited"
        )
    elif target not in frame.columns:
        raise missing_columns_error(f"Data file {source}", "--target", [target], frame.columns)
    values = frame[target] if target else None
    classes = values is not None and (not pd.api.types.is_numeric_dtype(values) or values.nunique() <= MAX_CLASSES)
    features = [c for c in frame.columns if c != target]
    found = audit_table(frame, {"all": np.arange(len(frame))}, features, target, classes, Table(frame, source).row)
    return {"source": source, "layout": "table", **found, "notes": notes}


def _audit_table_config(config) -> dict:
    """A tabular config's table split as its run splits it (classical/prepare.py), over the features it trains on."""
    from trainforge.classical.prepare import prepare

    prep = prepare(config)
    parts = {part: at for part in PARTS if len(at := getattr(prep.split, part))}
    target = config.data.target
    notes = [NOT_FOR_TABLES]
    if target is None:
        notes.append("no `data.target`: class balance and conflicting labels not audited")
    features = list(prep.X.columns)
    classes = config.task != "regression"
    found = audit_table(prep.table.frame, parts, features, target, classes, prep.table.row)
    return {"source": prep.table.source.removeprefix("Data file "), "layout": "table", **found, "notes": notes}


def audit_source(source: str, settings: AuditSettings = AuditSettings(), label_issues: bool = False) -> dict:
    """A data file as one split (`all`), or a run config's data as the splits its run would train on; a table
    (a tabular config, or a .csv / .tsv / .parquet file whose columns fit no text layout) gets the table audit.
    With `label_issues`, a classification or text-classification config's rows whose label is likely wrong. `notes` says what was
    chosen or left out."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows
    from trainforge.data.report import DataReport

    if Path(source).suffix in (".yaml", ".yml"):
        from trainforge.config import load_config
        from trainforge.data.splits import load_splits

        config = load_config(source)
        if settings.target:
            raise ConfigError(
                f"Config {source}: --target names the label column of a table file; a config names it in `data.target`."
            )
        if label_issues:  # a classification table or text classification; other tasks get a ConfigError
            from trainforge.classical.label_issues import label_issues as find

            layout = "table" if config.task == "classification" else config.data.format
            return {"source": source, "layout": layout, "splits": {}, "label_issues": find(config)}
        if config.task in TABLE_TASKS:
            return _audit_table_config(config)
        settings, note = _token_settings(settings, config)
        splits = load_splits(config.data, config.training.seed)  # cleaned as the run will clean it (data.clean)
        parts = {part: list(getattr(splits, part)) for part in PARTS if len(getattr(splits, part))}
        found = audit_splits(parts, settings, _tokenizer(settings))
        return {"source": splits.source, "layout": splits.layout, **found, "notes": [note]}
    if _table_file(source):
        return _audit_table_file(source, settings)
    if settings.target:
        raise DataError(
            f"Data file {source}: --target names the label column of a table (a .csv, .tsv or .parquet file whose "
            "columns fit no text layout); this file holds text rows."
        )
    settings, note = _token_settings(settings)
    report = DataReport(source=source)
    rows = normalize_rows(read_rows(source), "auto", source, report=report)
    found = audit_splits({"all": rows}, settings, _tokenizer(settings))
    return {"source": source, "layout": report.layout, **found, "notes": [note]}

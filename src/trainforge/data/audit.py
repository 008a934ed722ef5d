"""`trainforge data audit`: exact and near duplicates, rows of validation / test that also occur in train
(leakage), and the shape of the data (lengths, turns, system prompts, labels, the chosen answers' length bias), as
tables and audit.json.

Near duplicates: MinHash signatures of word shingles in datasketch's LSH index, which finds the candidate pairs
without comparing every pair; a candidate counts when its estimated Jaccard similarity reaches the threshold."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from trainforge.errors import DataError

PARTS = ("train", "validation", "test")
NOT_TEXT = {"row", "where", "tools", "role"}  # fields of a normalized example that are not its text
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class AuditSettings:
    threshold: float = 0.8  # estimated Jaccard similarity of word shingles that makes two rows near duplicates
    shingle_words: int = 3
    num_perm: int = 128  # MinHash permutations: more is a finer similarity estimate, slower


def row_text(example: dict) -> str:
    """Every string of a normalized example (messages, prompts and answers, text), in order."""
    parts: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if key not in NOT_TEXT:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(example)
    return "\n".join(parts)


def exact_key(text: str) -> str:
    """Rows that differ only in case and whitespace are the same row."""
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def _shingles(text: str, size: int) -> list[bytes]:
    words = WORD.findall(text.lower())
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    return list({" ".join(words[i : i + size]).encode("utf-8") for i in range(len(words) - size + 1)})


class _Index:
    """Rows' MinHash signatures in an LSH index: the rows near a query row."""

    def __init__(self, settings: AuditSettings):
        from datasketch import MinHashLSH

        self.settings = settings
        self.lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)
        self.hashes: dict[str, object] = {}

    def signatures(self, texts: list[str]) -> list:
        from datasketch import MinHash

        shingles = [_shingles(t, self.settings.shingle_words) for t in texts]
        return MinHash.bulk(shingles, num_perm=self.settings.num_perm)

    def near(self, signature) -> list[str]:
        found = self.lsh.query(signature)
        return [key for key in found if self.hashes[key].jaccard(signature) >= self.settings.threshold]

    def add(self, key: str, signature) -> None:
        self.hashes[key] = signature
        self.lsh.insert(key, signature)


def _duplicates(examples: list[dict], texts: list[str], settings: AuditSettings) -> tuple[dict, _Index, set[str]]:
    """Exact and near duplicates within one split, and its index of distinct rows (for leakage)."""
    keys = [exact_key(t) for t in texts]
    first: dict[str, int] = {}
    exact_rows = []
    for number, key in enumerate(keys):
        if key in first:
            exact_rows.append(examples[number].get("row", number + 1))
        else:
            first[key] = number
    index = _Index(settings)
    distinct = list(first.items())
    near_rows = []
    for (key, number), signature in zip(distinct, index.signatures([texts[n] for _, n in distinct])):
        match = index.near(signature)
        if match:
            near_rows.append(examples[number].get("row", number + 1))
        index.add(key, signature)
    found = {
        "exact_duplicates": len(exact_rows),
        "exact_duplicate_rows": exact_rows[:20],
        "near_duplicates": len(near_rows),
        "near_duplicate_rows": near_rows[:20],
    }
    return found, index, set(keys)


def _leaks(examples: list[dict], texts: list[str], train_keys: set[str], train_index: _Index) -> dict:
    """Rows that also occur in train: exactly (case and whitespace aside), or nearly."""
    exact, near = [], []
    keys = [exact_key(t) for t in texts]
    for example, key, signature in zip(examples, keys, train_index.signatures(texts)):
        where = example.get("row")
        if key in train_keys:
            exact.append(where)
        elif train_index.near(signature):
            near.append(where)
    return {"exact": len(exact), "exact_rows": exact[:20], "near": len(near), "near_rows": near[:20]}


LANGUAGE_CONFIDENCE = 0.9  # below this probability a row's language is `uncertain` (short rows often are)
_identifier = None


def detect_language(text: str) -> str:
    """The ISO 639-1 code of the text's language (py3langid: its model ships with the package), or `uncertain`."""
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    language, probability = _identifier.classify(text)
    return language if probability >= LANGUAGE_CONFIDENCE else "uncertain"


def _spread(values: Iterable[int]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _shape(examples: list[dict], texts: list[str]) -> dict:
    """Lengths (in words), empty rows, the languages (the 10 commonest), and what the layout has: turns and system
    prompts, labels, the share of pairs whose chosen answer is the longer one."""
    shape = {
        "rows": len(examples),
        "empty": sum(1 for t in texts if not WORD.search(t)),
        "words": _spread(len(WORD.findall(t)) for t in texts),
        "languages": dict(Counter(detect_language(t) for t in texts).most_common(10)),
    }
    chats = [e["messages"] for e in examples if isinstance(e.get("messages"), list)]
    if chats:
        shape["turns"] = _spread(len(m) for m in chats)
        systems = Counter(m[0].get("content", "") for m in chats if m and m[0].get("role") == "system")
        shape["system_prompts"] = {"rows_with_one": sum(systems.values()), "distinct": len(systems)}
    labels = Counter(str(e["label"]) for e in examples if "label" in e)
    if labels:
        shape["labels"] = dict(labels.most_common())
    pairs = [e for e in examples if "chosen" in e and "rejected" in e]
    if pairs:
        longer = sum(1 for e in pairs if len(row_text({"a": e["chosen"]})) > len(row_text({"a": e["rejected"]})))
        shape["chosen_longer_share"] = round(longer / len(pairs), 4)
    return shape


def audit_splits(splits: dict[str, list[dict]], settings: AuditSettings = AuditSettings()) -> dict:
    """The audit of named splits (normalized examples); leakage is checked against `train` when there is one."""
    report: dict = {"settings": settings.__dict__, "splits": {}}
    train_index = train_keys = None
    for part, examples in sorted(splits.items(), key=lambda item: item[0] != "train"):
        texts = [row_text(e) for e in examples]
        duplicates, index, keys = _duplicates(examples, texts, settings)
        report["splits"][part] = {**_shape(examples, texts), **duplicates}
        if part == "train":
            train_index, train_keys = index, keys
        elif train_index is not None:
            report["splits"][part]["in_train"] = _leaks(examples, texts, train_keys, train_index)
    return report


def audit_source(source: str, settings: AuditSettings = AuditSettings(), label_issues: bool = False) -> dict:
    """A data file as one split (`all`), or a run config's data as the splits its run would train on; with
    `label_issues`, a tabular classification config's rows whose label is likely wrong."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows
    from trainforge.data.report import DataReport

    if Path(source).suffix in (".yaml", ".yml"):
        from trainforge.config import load_config
        from trainforge.data.splits import load_splits

        config = load_config(source)
        if label_issues:
            if config.task != "classification":
                raise DataError(
                    f"Config {source}: --label-issues ranks the rows of a classification table (task "
                    "classification); text classification is not supported yet."
                )
            from trainforge.classical.label_issues import label_issues as find

            return {"source": source, "layout": "table", "splits": {}, "label_issues": find(config)}
        if config.task in ("classification", "regression", "clustering"):
            raise DataError(
                f"Config {source}: auditing a table ({config.task}) for duplicates is not supported yet; "
                "--label-issues ranks its likely wrong labels."
            )
        splits = load_splits(config.data, config.training.seed)
        parts = {part: list(getattr(splits, part)) for part in PARTS if len(getattr(splits, part))}
        return {"source": splits.source, "layout": splits.layout, **audit_splits(parts, settings)}
    report = DataReport(source=source)
    rows = normalize_rows(read_rows(source), "auto", source, report=report)
    return {"source": source, "layout": report.layout, **audit_splits({"all": rows}, settings)}

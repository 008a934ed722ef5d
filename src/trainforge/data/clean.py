"""`trainforge data clean` on a file, and `data.clean` on a run's rows before the split: drop exact and near
duplicates, rows outside a token-length window and rows in another language, and optionally redact personal data
with typed placeholders; every dropped row is written with its reason. Both run one `Cleaner`. Deterministic
(MinHash and LSH are seeded), and idempotent: cleaned rows hold no pair it would drop, and placeholders are not
personal data.

Phone numbers are found by `phonenumbers` (libphonenumber's rules, so dates and order numbers are left alone);
e-mail and IPv4 addresses by pattern, card numbers by pattern and their Luhn checksum."""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from trainforge.config.schema import CleanConfig
from trainforge.data.report import DataReport
from trainforge.data.similarity import NOT_TEXT, NearIndex, detect_language, exact_key, row_text, token_counts
from trainforge.errors import DataError

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
CHUNK = 1000  # rows whose MinHash signatures and token counts are computed together
DEFAULT_TOKENIZER = "smollm2-135m-instruct"


@dataclass(frozen=True)
class CleanSettings:
    exact: bool = True  # drop exact duplicates (near ones need it: an exact duplicate is near too)
    near_threshold: float | None = 0.8  # None: exact duplicates only
    min_tokens: int | None = None
    max_tokens: int | None = None
    redact_pii: bool = False
    phone_region: str = "US"  # how numbers without a country code are read
    language: str | None = None  # ISO 639-1 code: drop rows read confidently as another language

    @classmethod
    def of(cls, section: CleanConfig) -> CleanSettings:
        """The settings of a config's `data.clean` (its tokenizer is loaded by `token_counter`)."""
        return cls(**section.model_dump(exclude={"tokenizer"}))


def _luhn(digits: str) -> bool:
    total = 0
    for i, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def redact(text: str, counts: Counter, region: str = "US") -> str:
    """`text` with e-mail addresses, phone numbers, IPv4 addresses and card numbers replaced by <EMAIL>, <PHONE>,
    <IP_ADDRESS>, <CREDIT_CARD>; `counts` counts each."""
    import phonenumbers

    def card(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            counts["<CREDIT_CARD>"] += 1
            return "<CREDIT_CARD>"
        return match.group()

    def ip(match: re.Match) -> str:
        try:
            ipaddress.IPv4Address(match.group())
        except ValueError:
            return match.group()  # 999.1.2.3 is not an address
        counts["<IP_ADDRESS>"] += 1
        return "<IP_ADDRESS>"

    def email(match: re.Match) -> str:
        counts["<EMAIL>"] += 1
        return "<EMAIL>"

    text = EMAIL.sub(email, text)
    text = CARD.sub(card, text)  # before phones: a card number is not read as one
    text = IPV4.sub(ip, text)
    phones = list(phonenumbers.PhoneNumberMatcher(text, region))
    for match in reversed(phones):
        text = text[: match.start] + "<PHONE>" + text[match.end :]
    if phones:
        counts["<PHONE>"] += len(phones)
    return text


class Cleaner:
    """One cleaning pass over rows in their order: a row is dropped when it is the same as (or, with a threshold,
    near) a row kept before it, falls outside the token window, or reads as another language; the first of a set of
    duplicates is kept. Only the kept rows' keys and signatures and the dropped rows are held, so any number of rows
    can stream through. Used by `trainforge data clean` (rows as read) and by `data.clean` (checked examples)."""

    def __init__(self, settings: CleanSettings, source: str, count_tokens: Callable[[list[str]], list[int]] | None):
        self.settings, self.source, self.count_tokens = settings, source, count_tokens
        self.index = NearIndex(settings.near_threshold) if settings.near_threshold else None
        self.seen: dict[str, tuple[int, object]] = {}  # exact key of a kept row → (its place, its row number)
        self.read = 0
        self.dropped: list[dict] = []  # {"source", "row", "reason", "detail", "data"}
        self.redacted: Counter = Counter()  # placeholder → how many

    @property
    def kept(self) -> int:
        return self.read - len(self.dropped)

    def reasons(self) -> Counter:
        return Counter(d["reason"] for d in self.dropped)

    def redact(self, value):
        """A row or example with personal data in its strings replaced by placeholders (counted); row numbers,
        roles and tool schemas are not text."""
        if isinstance(value, str):
            return redact(value, self.redacted, self.settings.phone_region)
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        if isinstance(value, dict):
            return {k: v if k in NOT_TEXT else self.redact(v) for k, v in value.items()}
        return value

    def _problem(self, key: str, text: str, signature, tokens: int | None) -> tuple[str, str] | None:
        s = self.settings
        if s.exact and key in self.seen:
            return "exact_duplicate", f"same as row {self.seen[key][1]}"
        if self.index and (near := self.index.near(signature)):
            return "near_duplicate", f"near row {min(self.seen[k] for k in near)[1]}"  # the first: not set order
        if tokens is not None and s.min_tokens and tokens < s.min_tokens:
            return "too_short", f"{tokens} tokens, fewer than {s.min_tokens}"
        if tokens is not None and s.max_tokens and tokens > s.max_tokens:
            return "too_long", f"{tokens} tokens, more than {s.max_tokens}"
        if s.language and (language := detect_language(text)) not in (s.language, "uncertain"):
            return "wrong_language", f"reads as {language}"  # an uncertain row is kept
        return None

    def rows(self, items: Iterable[tuple[object, str, object]]) -> Iterator:
        """The `data` of each (row number, text, data) that is kept, as they come."""
        items = iter(items)
        while chunk := list(islice(items, CHUNK)):
            texts = [text for _, text, _ in chunk]
            signatures = self.index.signatures(texts) if self.index else [None] * len(chunk)
            tokens = self.count_tokens(texts) if self.count_tokens else [None] * len(chunk)
            for (number, text, data), signature, count in zip(chunk, signatures, tokens):
                self.read += 1
                key = exact_key(text)
                problem = self._problem(key, text, signature, count)
                if problem:
                    reason, detail = problem
                    self.dropped.append(
                        {"source": self.source, "row": number, "reason": reason, "detail": detail, "data": data}
                    )
                    continue
                if self.settings.exact:
                    self.seen[key] = (len(self.seen), number)
                if self.index:
                    self.index.add(key, signature)
                yield data

    def examples(self, examples: Iterable[dict]) -> Iterator[dict]:
        """Checked examples as cleaning leaves them; personal data is redacted first, so duplicates are judged as
        the examples will be trained on."""
        if self.settings.redact_pii:
            examples = map(self.redact, examples)
        return self.rows((e.get("row"), row_text(e), e) for e in examples)


@lru_cache(maxsize=2)
def token_counter(model: str) -> Callable[[list[str]], list[int]]:
    """How many tokens `model`'s tokenizer makes of each text, special tokens aside."""
    from trainforge.models import load_tokenizer

    return partial(token_counts, load_tokenizer(model))


def clean_examples(section: CleanConfig, examples: Iterable[dict], source: str, report: DataReport) -> Iterator[dict]:
    """`data.clean` on the checked examples of one file (or bundled task), as they come; once the last is read,
    what it dropped and redacted is in `report`. A file it leaves empty fails."""
    counts = token_counter(section.tokenizer) if section.min_tokens or section.max_tokens else None
    cleaner = Cleaner(CleanSettings.of(section), source, counts)
    yield from cleaner.examples(examples)
    if cleaner.read and not cleaner.kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in cleaner.reasons().most_common())
        raise DataError(
            f"`data.clean` dropped every row of {source} ({reasons}); loosen the `data.clean` keys behind those "
            "reasons (min_tokens / max_tokens, language, near_threshold)."
        )
    report.clean_read += cleaner.read
    for dropped in cleaner.dropped:
        report.cleaned.setdefault(dropped["reason"], []).append(dropped["row"])
    report.redacted = dict(Counter(report.redacted) + cleaner.redacted)
    report.clean_dropped += cleaner.dropped


def write_dropped(path: Path, dropped: Iterable[dict]) -> None:
    """Each dropped row, its reason and detail, one JSON line each."""
    from trainforge.tracking.rundir import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dropped))


def clean_file(source: str, out: Path, settings: CleanSettings, model: str = DEFAULT_TOKENIZER) -> tuple[Cleaner, Path]:
    """Clean a data file into `out` (JSON Lines) and `<out>.dropped.jsonl` (each dropped row, its reason and
    detail). Personal data is redacted first, so duplicates are judged as the cleaned file will hold them; a row is
    judged by its text as its layout reads it."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows
    from trainforge.tracking.rundir import atomic_write_text

    counts = token_counter(model) if settings.min_tokens or settings.max_tokens else None
    cleaner = Cleaner(settings, source, counts)
    rows = list(read_rows(source))
    if settings.redact_pii:
        rows = [(number, cleaner.redact(row)) for number, row in rows]
    examples = normalize_rows(rows, "auto", source, report=DataReport(source=source))
    text_of = {e["row"]: row_text(e) for e in examples}
    kept = cleaner.rows((number, text_of.get(number) or row_text(row), row) for number, row in rows)
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))
    dropped = out.with_name(f"{out.name.removesuffix('.jsonl')}.dropped.jsonl")
    write_dropped(dropped, cleaner.dropped)
    return cleaner, dropped

"""`trainforge data clean`: drop exact and near duplicates and rows outside a token-length window, and optionally
redact personal data with typed placeholders; every dropped row is written with its reason. Deterministic (MinHash
and LSH are seeded), and idempotent: a cleaned file holds no pair it would drop, and placeholders are not personal
data.

Phone numbers are found by `phonenumbers` (libphonenumber's rules, so dates and order numbers are left alone);
e-mail and IPv4 addresses by pattern, card numbers by pattern and their Luhn checksum."""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainforge.data.audit import AuditSettings, _Index, detect_language, exact_key, row_text

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


@dataclass(frozen=True)
class CleanSettings:
    near_threshold: float | None = 0.8  # None: exact duplicates only
    min_tokens: int | None = None
    max_tokens: int | None = None
    redact_pii: bool = False
    phone_region: str = "US"  # how numbers without a country code are read
    language: str | None = None  # ISO 639-1 code: drop rows read confidently as another language


@dataclass
class Cleaned:
    kept: list[tuple[int, dict]]  # (row number, row as read)
    dropped: list[dict]  # {"row", "reason", "detail", "data"}
    redacted: Counter = field(default_factory=Counter)  # placeholder → how many

    def reasons(self) -> Counter:
        return Counter(d["reason"] for d in self.dropped)


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


def _redacted(value, counts: Counter, region: str):
    if isinstance(value, str):
        return redact(value, counts, region)
    if isinstance(value, list):
        return [_redacted(v, counts, region) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, counts, region) for k, v in value.items()}
    return value


def clean_rows(rows: list[tuple[int, dict]], examples: list[dict], settings: CleanSettings, tokenizer=None) -> Cleaned:
    """`rows` as read, `examples` their normalized forms (each with its `row` number). The first of a set of
    duplicates is kept; a row is a near duplicate when it is near a row kept before it."""
    text_of = {e["row"]: row_text(e) for e in examples}
    texts = [text_of.get(number) or row_text(row) for number, row in rows]
    result = Cleaned([], [])
    seen: dict[str, int] = {}
    index = _Index(AuditSettings(threshold=settings.near_threshold)) if settings.near_threshold else None
    signatures = index.signatures(texts) if index else [None] * len(rows)
    for (number, row), text, signature in zip(rows, texts, signatures):
        key = exact_key(text)
        drop = None
        if key in seen:
            drop = ("exact_duplicate", f"same as row {seen[key]}")
        elif index and (near := index.near(signature)):
            drop = ("near_duplicate", f"near row {seen[near[0]]}")
        elif tokenizer is not None and (settings.min_tokens or settings.max_tokens):
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if settings.min_tokens and tokens < settings.min_tokens:
                drop = ("too_short", f"{tokens} tokens, fewer than {settings.min_tokens}")
            elif settings.max_tokens and tokens > settings.max_tokens:
                drop = ("too_long", f"{tokens} tokens, more than {settings.max_tokens}")
        if not drop and settings.language:
            language = detect_language(text)
            if language not in (settings.language, "uncertain"):  # an uncertain row is kept
                drop = ("wrong_language", f"reads as {language}")
        if drop:
            result.dropped.append({"row": number, "reason": drop[0], "detail": drop[1], "data": row})
            continue
        seen[key] = number
        if index:
            index.add(key, signature)
        result.kept.append((number, row))
    return result


def clean_file(source: str, out: Path, settings: CleanSettings, model: str | None = None) -> tuple[Cleaned, Path]:
    """Clean a data file into `out` (JSON Lines) and `<out>.dropped.jsonl` (each dropped row, its reason and
    detail). Personal data is redacted first, so duplicates are judged as the cleaned file will hold them."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows
    from trainforge.data.report import DataReport
    from trainforge.tracking.rundir import atomic_write_text

    rows = list(read_rows(source))
    redacted: Counter = Counter()
    if settings.redact_pii:
        rows = [(number, _redacted(row, redacted, settings.phone_region)) for number, row in rows]
    examples = normalize_rows(rows, "auto", source, report=DataReport(source=source))
    tokenizer = None
    if settings.min_tokens or settings.max_tokens:
        from trainforge.models import load_tokenizer

        tokenizer = load_tokenizer(model or "smollm2-135m-instruct")
    result = clean_rows(rows, examples, settings, tokenizer)
    result.redacted = redacted
    dropped = out.with_name(f"{out.name.removesuffix('.jsonl')}.dropped.jsonl")
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for _, row in result.kept))
    atomic_write_text(dropped, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in result.dropped))
    return result, dropped

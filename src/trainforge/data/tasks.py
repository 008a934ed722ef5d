"""Bundled tasks the project generates itself (seeded), so every demo and test runs offline."""

from __future__ import annotations

import calendar
import json
import random
from typing import Callable

from trainforge.errors import ConfigError

MONTHS = list(calendar.month_name)[1:]
ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}

DATE_FORMATS: list[Callable[[int, int, int], str]] = [
    lambda y, m, d: f"{MONTHS[m - 1]} {d}, {y}",
    lambda y, m, d: f"{d} {MONTHS[m - 1]} {y}",
    lambda y, m, d: f"{MONTHS[m - 1][:3]}. {d}{ORDINAL.get(d, 'th')}, {y}",
    lambda y, m, d: f"the {d}{ORDINAL.get(d, 'th')} of {MONTHS[m - 1]}, {y}",
    lambda y, m, d: f"{y}-{m:02d}-{d:02d}",
    lambda y, m, d: f"{MONTHS[m - 1]} {d}{ORDINAL.get(d, 'th')} {y}",
    lambda y, m, d: f"{d:02d}.{m:02d}.{y}",
]
SENTENCES = [
    "The invoice is due on {date}.",
    "We first met on {date} at the conference in Lyon.",
    "Her flight leaves on {date}, early in the morning.",
    "The contract was signed on {date} by both parties.",
    "Please send the report before {date}.",
    "On {date} the store reopened after renovation.",
    "The package was delivered on {date}, two days late.",
    "Our next team offsite is planned for {date}.",
    "He was born on {date} in a small town.",
    "The warranty expires on {date}.",
    "Registration closes on {date} at midnight.",
    "The museum exhibit opened to the public on {date}.",
]
DATES_INSTRUCTION = (
    'Extract the date mentioned in the text as JSON with integer fields "year", "month" and "day". '
    "Answer with the JSON only."
)


def dates_json(n: int, seed: int) -> list[dict]:
    """Free-text dates in seven formats → {"year": .., "month": .., "day": ..}. Chat rows, exactly checkable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        y, m = rng.randint(1950, 2035), rng.randint(1, 12)
        d = rng.randint(1, calendar.monthrange(y, m)[1])
        text = rng.choice(SENTENCES).format(date=rng.choice(DATE_FORMATS)(y, m, d))
        answer = json.dumps({"year": y, "month": m, "day": d})
        rows.append({"messages": [
            {"role": "user", "content": f"{DATES_INSTRUCTION}\nText: {text}"},
            {"role": "assistant", "content": answer},
        ]})
    return rows


TASKS: dict[str, tuple[str, Callable[[int, int], list[dict]]]] = {
    "dates-json": ("chat", dates_json),
}


def generate_task(name: str, n: int, seed: int) -> tuple[str, list[dict]]:
    """(format, rows) of a bundled task."""
    if name not in TASKS:
        raise ConfigError(f"Unknown bundled task `data.task` = {name!r}; expected one of {', '.join(TASKS)}.")
    fmt, make = TASKS[name]
    return fmt, make(n, seed)

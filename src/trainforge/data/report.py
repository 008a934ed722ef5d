"""What happened to the rows on their way to training, so that nothing is dropped, cut or ignored without a word:
rows dropped and rows truncated by reason (with the first row numbers), fields the layout does not read (with how
many rows hold them), and the layout read and why. Printed when a run prepares its data, kept in its summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

SHOWN_ROWS = 5  # row numbers quoted per reason
CLEANED = {  # why `data.clean` dropped a row (data/clean.py), in words
    "exact_duplicate": "the same text as a row kept before it (case and whitespace aside)",
    "near_duplicate": "near a row kept before it (`data.clean.near_threshold`)",
    "too_short": "fewer tokens than `data.clean.min_tokens`",
    "too_long": "more tokens than `data.clean.max_tokens`",
    "wrong_language": "read as another language than `data.clean.language`",
}


@dataclass
class DataReport:
    source: str = ""
    layout: str | None = None
    why: str | None = None  # how the layout was chosen (detected from which fields, or set in the config)
    unused: dict[str, int] = field(default_factory=dict)  # field → rows holding it
    dropped: dict[str, list] = field(default_factory=dict)  # reason (a short key) → row numbers
    truncated: dict[str, list] = field(default_factory=dict)  # reason → row numbers
    reasons: dict[str, str] = field(default_factory=dict)  # reason → what it means, in words
    notes: list[str] = field(default_factory=list)  # other facts worth a line (tokens cut from a corpus tail, ...)
    sources: dict[str, int] = field(default_factory=dict)  # several sources: training rows each gives
    fingerprints: dict[str, str] = field(default_factory=dict)  # split → its content's fingerprint (data/arrow.py)
    clean_read: int = 0  # `data.clean`: rows it judged
    cleaned: dict[str, list] = field(default_factory=dict)  # `data.clean`: reason → row numbers dropped
    redacted: dict[str, int] = field(default_factory=dict)  # `data.clean`: placeholder → how many it replaced
    clean_dropped: list[dict] = field(default_factory=list)  # the rows it dropped, for the run's dropped.jsonl

    def drop(self, reason: str, row, why: str) -> None:
        self.dropped.setdefault(reason, []).append(row)
        self.reasons[reason] = why

    def truncate(self, reason: str, row, why: str) -> None:
        self.truncated.setdefault(reason, []).append(row)
        self.reasons[reason] = why

    def unused_field(self, name: str, rows: int = 1) -> None:
        self.unused[name] = self.unused.get(name, 0) + rows

    def merge(self, other: DataReport, part: str = "") -> None:
        """Add `other`'s facts; `part` (e.g. `validation`) prefixes its reasons, whose rows number another file
        or split."""
        for name, count in other.unused.items():
            self.unused_field(name, count)
        prefix = f"{part}." if part else ""
        for mine, theirs in (
            (self.dropped, other.dropped),
            (self.truncated, other.truncated),
            (self.cleaned, other.cleaned),
        ):
            for reason, rows in theirs.items():
                mine.setdefault(prefix + reason, []).extend(rows)
        self.reasons.update({prefix + k: f"{part}: {v}" if part else v for k, v in other.reasons.items()})
        self.sources.update(other.sources)
        self.fingerprints.update(other.fingerprints)
        self.clean_read += other.clean_read
        self.redacted = dict(Counter(self.redacted) + Counter(other.redacted))
        self.clean_dropped += other.clean_dropped
        self.notes += [f"{part}: {n}" if part else n for n in other.notes]

    @staticmethod
    def _rows(rows: list) -> str:
        shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
        return f"rows {shown}{', ...' if len(rows) > SHOWN_ROWS else ''}"

    def lines(self) -> list[str]:
        """One line per fact, for the console and `data validate`."""
        out = [f"layout {self.layout}: {self.why}"] if self.layout and self.why else []
        if self.unused:
            fields = ", ".join(f"`{name}` ({count} rows)" for name, count in sorted(self.unused.items()))
            out.append(f"fields not used by the {self.layout or 'chosen'} layout: {fields}")
        for verb, found in (("dropped", self.dropped), ("truncated", self.truncated)):
            out += [
                f"{len(rows)} rows {verb}: {self.reasons[reason]} ({self._rows(rows)})"
                for reason, rows in found.items()
            ]
        return out + self._clean_lines() + self.notes

    def _clean_lines(self) -> list[str]:
        if not self.clean_read:
            return []
        kept = self.clean_read - sum(map(len, self.cleaned.values()))
        redacted = ", ".join(f"{count} {placeholder}" for placeholder, count in sorted(self.redacted.items()))
        out = [f"data.clean kept {kept} of {self.clean_read} rows" + (f"; redacted {redacted}" if redacted else "")]
        for reason, rows in self.cleaned.items():
            part, _, name = reason.rpartition(".")
            where = f"{part}: " if part else ""
            out.append(f"{len(rows)} rows dropped by data.clean: {where}{CLEANED[name]} ({self._rows(rows)})")
        return out

    def summary(self) -> dict:
        """Counts for the run's summary.json."""
        out = {f"data.unused.{name}": count for name, count in self.unused.items()}
        out.update({f"data.dropped.{reason}": len(rows) for reason, rows in self.dropped.items()})
        out.update({f"data.truncated.{reason}": len(rows) for reason, rows in self.truncated.items()})
        out.update({f"data.source.{label}": rows for label, rows in self.sources.items()})
        if self.clean_read:
            out["data.clean.rows_before"] = self.clean_read
            out["data.clean.rows_after"] = self.clean_read - sum(map(len, self.cleaned.values()))
        out.update({f"data.clean.{reason}": len(rows) for reason, rows in self.cleaned.items()})
        out.update({f"data.redacted.{placeholder.strip('<>')}": count for placeholder, count in self.redacted.items()})
        if self.layout:
            out["data.layout"] = self.layout
        return out

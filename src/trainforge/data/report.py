"""What happened to the rows on their way to training, so that nothing is dropped, cut or ignored without a word:
rows dropped and rows truncated by reason (with the first row numbers), fields the layout does not read (with how
many rows hold them), and the layout read and why. Printed when a run prepares its data, kept in its summary."""

from __future__ import annotations

from dataclasses import dataclass, field

SHOWN_ROWS = 5  # row numbers quoted per reason


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
        for mine, theirs in ((self.dropped, other.dropped), (self.truncated, other.truncated)):
            for reason, rows in theirs.items():
                mine.setdefault(prefix + reason, []).extend(rows)
        self.reasons.update({prefix + k: f"{part}: {v}" if part else v for k, v in other.reasons.items()})
        self.sources.update(other.sources)
        self.fingerprints.update(other.fingerprints)
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
        return out + self.notes

    def summary(self) -> dict:
        """Counts for the run's summary.json."""
        out = {f"data.unused.{name}": count for name, count in self.unused.items()}
        out.update({f"data.dropped.{reason}": len(rows) for reason, rows in self.dropped.items()})
        out.update({f"data.truncated.{reason}": len(rows) for reason, rows in self.truncated.items()})
        out.update({f"data.source.{label}": rows for label, rows in self.sources.items()})
        out.update({f"data.fingerprint.{part}": value for part, value in self.fingerprints.items()})
        if self.layout:
            out["data.layout"] = self.layout
        return out

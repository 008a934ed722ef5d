"""The tables of `trainforge data audit` (printed by the CLI, and in audit.html) and audit.html itself: those
tables and plots of the data's shape (lengths, answer lengths, turns, labels, languages, missing values) drawn
from the histograms and counts in the audit's report, one self-contained page."""

from __future__ import annotations

import html
from pathlib import Path

from trainforge.tracking import figures
from trainforge.tracking.report import html_image, html_page, html_table
from trainforge.tracking.rundir import atomic_write_text

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows
SHOWN_BARS = 20  # categories in a bar chart (the commonest)


def _spread(found: dict | None) -> str:
    if not found:
        return "—"
    return f"{found.get('median', 0):g} / {found.get('p95', 0):g} / {found.get('max', 0):g}"


def _rows(numbers: list) -> str:
    return ", ".join(map(str, numbers)) or "—"


def _value(value) -> str:
    """A finding as a table cell: counts as `name count, ...`, spreads as median / p95 / max."""
    if isinstance(value, dict) and "median" in value:
        return "median / p95 / max " + _spread(value)
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
    return str(value)


def _label_issues(found: dict) -> Table:
    title = f"{found['issues']} of {found['rows']} rows likely mislabelled ({found['model']}, {found['folds']} folds)"
    keys = ["source", "row", "label", "predicted", "probability_of_label"]
    keys += ["text"] if any("text" in issue for issue in found["ranked"]) else []  # text classification
    header = [key.replace("probability_of_label", "p(label)") for key in keys]
    rows = [[str(issue.get(k, "")) for k in keys] for issue in found["ranked"][:20]]
    return title, header, rows or [["none found", *[""] * (len(keys) - 1)]]  # said, not an absent table


def _text_tables(report: dict) -> list[Table]:
    splits = report["splits"]
    counted = any("tokens" in found for found in splits.values())
    answers = next((found["answer_length"]["unit"] for found in splits.values() if "answer_length" in found), None)
    header = ["split", "rows", "empty", "words median / p95 / max"]
    if counted:
        settings = report["settings"]
        header += [
            "tokens median / p95 / max",
            f"too short (< {settings['min_tokens']})",
            f"too long (> {settings['max_tokens']})",
        ]
    if answers:
        header.append(f"answer {answers} median / p95 / max")
    lengths, duplicates, details = [], [], []
    for part, found in splits.items():
        row = [part, str(found["rows"]), str(found["empty"]), _spread(found["words"])]
        if counted:
            row += [_spread(found["tokens"]), str(found["too_short"]["count"]), str(found["too_long"]["count"])]
        if answers:
            row.append(_spread(found.get("answer_length")))
        lengths.append(row)
        leaks = found.get("in_train")
        duplicates.append(
            [
                part,
                str(found["exact_duplicates"]),
                str(found["near_duplicates"]),
                f"{leaks['exact']} / {leaks['near']}" if leaks else "—",
            ]
        )
        for key in ("languages", "turns", "system_prompts", "labels", "chosen_longer_share"):
            if key in found:
                details.append([part, key.replace("_", " "), _value(found[key])])
        rows = {
            "too short, rows": found.get("too_short", {}).get("rows"),
            "too long, rows": found.get("too_long", {}).get("rows"),
            "exact duplicates, rows": found["exact_duplicate_rows"],
            "near duplicates, rows": found["near_duplicate_rows"],
            "in train exactly, rows": leaks and leaks["exact_rows"],
            "in train nearly, rows": leaks and leaks["near_rows"],
        }
        details += [[part, what, _rows(numbers)] for what, numbers in rows.items() if numbers]
    return [
        (f"audit of {report['source']} ({report['layout']}): lengths", header, lengths),
        ("duplicates and leaks", ["split", "exact dup.", "near dup.", "in train: exact / near"], duplicates),
        ("details (the first row numbers of each finding)", ["split", "what", "value"], details),
    ]


def _table_tables(report: dict) -> list[Table]:
    target = report["target"]
    header = ["split", "rows", "exact dup.", "same features, other label", "rows with missing values", "in train"]
    summary, details = [], []
    for part, found in report["splits"].items():
        leaks = found.get("in_train")
        summary.append(
            [
                part,
                str(found["rows"]),
                str(found["exact_duplicates"]),
                str(found["conflicting_labels"]) if target else "—",
                str(found["rows_with_missing"]),
                str(leaks["exact"]) if leaks else "—",
            ]
        )
        for key, what in (("labels", f"labels ({target})"), ("target", target), ("missing", "missing values")):
            if found.get(key):
                details.append([part, what, _value(found[key])])
        rows = {
            "exact duplicates, rows": found["exact_duplicate_rows"],
            "same features, other label, rows": found.get("conflicting_label_rows"),
            "in train, rows": leaks and leaks["exact_rows"],
        }
        details += [[part, what, _rows(numbers)] for what, numbers in rows.items() if numbers]
    title = f"audit of {report['source']} (table of {report['features']} features, target {target or 'none'})"
    return [
        (title, header, summary),
        ("details (the first row numbers of each finding)", ["split", "what", "value"], details),
    ]


def audit_tables(report: dict) -> list[Table]:
    """The audit's findings as tables: likely wrong labels, then per split lengths, duplicates, leaks, details."""
    tables = [_label_issues(report["label_issues"])] if "label_issues" in report else []
    if report["splits"]:
        tables += _table_tables(report) if report["layout"] == "table" else _text_tables(report)
    return [table for table in tables if table[2]]  # a details table may have nothing to say


def _histograms(title: str, per_split: dict[str, dict]) -> bytes:
    """One step line per split, as its share of rows, so splits of different sizes compare."""
    fig, ax = figures.pyplot().subplots(figsize=(6.5, 3), dpi=90)
    for part, found in per_split.items():
        total = sum(found["counts"]) or 1
        ax.stairs([c / total for c in found["counts"]], found["edges"], label=part)
    ax.set_xlabel(next(iter(per_split.values()))["unit"])
    ax.set_ylabel("share of rows")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return figures.png(fig)


def _bars(title: str, per_split: dict[str, dict], rows: dict[str, int]) -> bytes:
    """Grouped bars per split: each category's share of the split's rows, the commonest categories first."""
    totals: dict[str, int] = {}
    for counts in per_split.values():
        for name, n in counts.items():
            totals[name] = totals.get(name, 0) + n
    names = sorted(totals, key=totals.get, reverse=True)[:SHOWN_BARS]
    fig, ax = figures.pyplot().subplots(figsize=(6.5, 3), dpi=90)
    width = 0.8 / len(per_split)
    for i, (part, counts) in enumerate(per_split.items()):
        shares = [counts.get(name, 0) / (rows[part] or 1) for name in names]
        ax.bar([x + i * width for x in range(len(names))], shares, width, label=part)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylabel("share of rows")
    ax.set_title(title)
    ax.legend()
    return figures.png(fig)


def audit_figures(report: dict) -> list[tuple[str, bytes]]:
    """(title, PNG) of each plot the report has data for."""
    splits = report["splits"]
    rows = {part: found["rows"] for part, found in splits.items()}
    plots = []
    for key, title in (
        ("length", "Row length"),
        ("answer_length", "Answer length"),
        ("turns", "Turns per conversation"),
        ("target", "Target"),
    ):
        found = {part: f["histograms"][key] for part, f in splits.items() if f.get("histograms", {}).get(key)}
        if found:
            plots.append((title, _histograms(title, found)))
    for key, title in (("labels", "Labels"), ("languages", "Languages"), ("missing", "Missing values per column")):
        found = {part: f[key] for part, f in splits.items() if f.get(key)}
        if found:
            plots.append((title, _bars(title, found, rows)))
    return plots


def write_audit_html(report: dict, path: Path) -> None:
    """audit.html: the notes, the tables and the plots; figures are embedded, nothing is fetched."""
    parts = [f"<h1>trainforge data audit of {html.escape(str(report['source']))}</h1>"]
    if report.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in report["notes"]) + "</ul>")
    for title, header, rows in audit_tables(report):
        parts += [f"<h2>{html.escape(title)}</h2>", html_table(rows, header)]
    for title, png in audit_figures(report):
        parts += [f"<h2>{html.escape(title)}</h2>", html_image(title, png)]
    atomic_write_text(path, html_page(f"audit of {report['source']}", parts))

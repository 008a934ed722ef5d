"""Human evaluation round trip: a blinded side-by-side sheet (CSV + a self-contained HTML page) for annotators, and
its import: unblind with the key kept apart, count preferences, win rate with a Wilson score interval."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import random
from pathlib import Path
from statistics import NormalDist

from trainforge.errors import DataError
from trainforge.tracking import atomic_write_json, atomic_write_text

COLUMNS = ["id", "prompt", "answer_A", "answer_B", "preference"]
CHOICES = {"a": "A", "b": "B", "tie": "tie"}


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (stays inside [0, 1] and is sane for small n)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_sheet(out_dir: str | Path, prompts: list[str], answers: dict[str, list[str]], seed: int = 0) -> Path:
    """Write sheet.csv and sheet.html (what annotators see: answers as A/B in a seeded random order) and key.json
    (which model each side is; keep it from the annotators)."""
    (name_1, answers_1), (name_2, answers_2) = answers.items()
    rng = random.Random(seed)
    rows, key = [], {"models": [name_1, name_2], "seed": seed, "items": {}}
    for i, (prompt, x, y) in enumerate(zip(prompts, answers_1, answers_2), start=1):
        swap = rng.random() < 0.5
        rows.append(
            {
                "id": str(i),
                "prompt": prompt,
                "answer_A": y if swap else x,
                "answer_B": x if swap else y,
                "preference": "",
            }
        )
        key["items"][str(i)] = {"A": name_2 if swap else name_1, "B": name_1 if swap else name_2}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sheet.csv", _csv_text(rows))
    atomic_write_text(out / "sheet.html", _html(rows))
    atomic_write_json(out / "key.json", key)
    return out


def _html(rows: list[dict]) -> str:
    """One page, no external resources: each prompt with its two answers and A / B / tie buttons; a button saves
    the filled sheet as CSV (the same columns as sheet.csv)."""
    cards = "".join(
        f'<section><h2>#{r["id"]}</h2><pre class="prompt">{html.escape(r["prompt"])}</pre><div class="pair">'
        f"<div><h3>A</h3><pre>{html.escape(r['answer_A'])}</pre></div>"
        f"<div><h3>B</h3><pre>{html.escape(r['answer_B'])}</pre></div></div><p>"
        + "".join(
            f'<label><input type="radio" name="p{html.escape(r["id"])}" value="{v}"> {v}</label> '
            for v in ("A", "B", "tie")
        )
        + "</p></section>"
        for r in rows
    )
    data = json.dumps(rows).replace("<", "\\u003c")  # no "</script>" or "<!--" inside the script element
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Side-by-side evaluation</title>
<style>
body {{ font-family: sans-serif; max-width: 72rem; margin: auto; padding: 1rem; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: .5rem; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }}
section {{ border-bottom: 1px solid #ccc; padding-bottom: 1rem; }}
</style></head><body>
<h1>Which answer is better?</h1>
<p>For each prompt pick A, B or tie, then press <b>Save CSV</b> and return the file (or fill the
<code>preference</code> column of sheet.csv directly).</p>
{cards}
<p><button id="save">Save CSV</button></p>
<script>
const rows = {data};
function cell(v) {{ return '"' + String(v).replace(/"/g, '""') + '"'; }}
document.getElementById("save").onclick = () => {{
  const cols = {json.dumps(COLUMNS)};
  const lines = [cols.join(",")];
  for (const r of rows) {{
    const picked = document.querySelector('input[name="p' + r.id + '"]:checked');
    lines.push(cols.map(c => cell(c === "preference" ? (picked ? picked.value : "") : r[c])).join(","));
  }}
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\\n") + "\\n"], {{type: "text/csv"}}));
  link.download = "sheet.csv";
  link.click();
}};
</script></body></html>
"""


def import_sheet(sheet: str | Path, key_file: str | Path | None = None) -> dict:
    """Unblind a filled sheet: wins of the first exported model over the second. Ties are excluded from the win
    rate and its Wilson interval (win rate = wins / (wins + losses)) and reported as their own rate."""
    from trainforge.data.readers import read_rows

    sheet = Path(sheet)
    key_path = Path(key_file) if key_file else sheet.parent / "key.json"
    if not key_path.is_file():
        raise DataError(
            f"No key file {key_path} to unblind {sheet}; pass the key.json written by the export with --key."
        )
    key = json.loads(key_path.read_text(encoding="utf-8"))
    first, second = key["models"]
    counts = {first: 0, second: 0, "tie": 0}
    seen = set()
    for number, row in read_rows(sheet):
        where = f"Sheet {sheet}, row {number}"
        missing = [c for c in ("id", "preference") if c not in row]
        if missing:
            raise DataError(
                f"{where}: no {', '.join(missing)} column; keep the columns of the exported sheet ({', '.join(COLUMNS)})."
            )
        ident = str(row["id"]).strip()
        item = key["items"].get(ident)
        if item is None:
            raise DataError(
                f"{where}: id {ident!r} is not in the key {key_path}; was the sheet edited or from another export?"
            )
        if ident in seen:
            raise DataError(f"{where}: id {ident!r} appears twice.")
        seen.add(ident)
        choice = CHOICES.get(str(row["preference"] or "").strip().lower())
        if choice is None:
            raise DataError(
                f"{where} (id {ident}): preference {row['preference']!r} is not one of A, B, tie"
                f"{' (it is empty: every row needs a verdict)' if not str(row['preference'] or '').strip() else ''}."
            )
        counts[item[choice] if choice != "tie" else "tie"] += 1
    absent = sorted(set(key["items"]) - seen, key=int)
    if absent:
        raise DataError(
            f"Sheet {sheet} lacks the rows with id {', '.join(absent)} of the export; every prompt needs a verdict."
        )
    n, decided = len(seen), counts[first] + counts[second]
    return {
        "a": first,
        "b": second,
        "rated": n,
        "wins": counts[first],
        "losses": counts[second],
        "ties": counts["tie"],
        "tie_rate": counts["tie"] / n,
        "win_rate": counts[first] / decided if decided else None,
        "ci95": list(wilson(counts[first], decided)) if decided else None,
        "ties_in_win_rate": "excluded",
    }


def export_sources(
    name_a: str,
    name_b: str,
    prompts_file: str,
    out_dir: str,
    seed: int = 0,
    max_new_tokens: int = 128,
    runs_dir: str = "runs",
) -> Path:
    """Answer the prompts with both runs / models and write the blinded sheet."""
    from trainforge.evaluation.sources import answer_prompts, load_source, read_prompts

    prompts = read_prompts(prompts_file)
    answers = {}
    for name in (name_a, name_b):
        source = load_source(name, runs_dir)
        label = source.label if source.label not in answers else f"{source.label} ({name})"
        answers[label] = answer_prompts(source, prompts, max_new_tokens)
    return write_sheet(out_dir, prompts, answers, seed)

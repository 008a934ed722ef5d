"""Throughput of `trainforge data audit` and `data clean` on generated chat rows (benchmarks/data_prep.py's alpaca
rows as conversations), with planted exact and near duplicates whose counts the audit must find. The audit counts
tokens with the default tokenizer (--no-tokens: words only). No other tool audits near duplicates and leaks in one
pass (Axolotl drops exact duplicates only), so there is no side to compare.

    PYTHONPATH=src python benchmarks/data_audit.py [--rows 100000] [--no-tokens] [--out benchmarks/data_audit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from data_prep import alpaca_rows  # noqa: E402 - the same generator as the preparation benchmark

PLANTED = 0.01  # share of rows planted as exact copies, and again as one-word edits of other rows


def chat(row: dict) -> dict:
    prompt = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]}


def planted_rows(n: int) -> tuple[list[dict], int, int]:
    rows = [chat(r) for r in alpaca_rows(n)]
    copies = [json.loads(json.dumps(rows[i])) for i in range(0, n, int(1 / PLANTED))]
    edited = []
    for i in range(1, n, int(1 / PLANTED)):
        row = json.loads(json.dumps(rows[i]))
        words = row["messages"][1]["content"].split()
        if len(words) >= 40:  # long enough that one word leaves the shingles well above the threshold
            words[len(words) // 2] = "zebra"
            row["messages"][1]["content"] = " ".join(words)
            edited.append(row)
    return rows + copies + edited, len(copies), len(edited)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-tokens", action="store_true", help="Lengths in words only, as `--no-tokens`.")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    from trainforge.data.audit import DEFAULT_TOKENIZER, AuditSettings, audit_source
    from trainforge.data.clean import CleanSettings, clean_file

    rows, copies, edited = planted_rows(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "chat.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        started = time.perf_counter()
        found = audit_source(str(data), AuditSettings(count_tokens=not args.no_tokens))["splits"]["all"]
        audit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cleaned, _ = clean_file(str(data), Path(folder) / "clean.jsonl", CleanSettings())
        clean_seconds = time.perf_counter() - started
    result = {
        "rows": len(rows),
        "planted": {"exact": copies, "near": edited},
        "found": {"exact": found["exact_duplicates"], "near": found["near_duplicates"]},
        "tokens_counted_with": None if args.no_tokens else DEFAULT_TOKENIZER,
        "dropped": dict(cleaned.reasons()),
        "audit_seconds": round(audit_seconds, 1),
        "audit_rows_per_second": round(len(rows) / audit_seconds),
        "clean_seconds": round(clean_seconds, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cores": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

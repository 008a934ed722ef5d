"""`trainforge data inspect`: counts, token-length percentiles and rendered examples of a data file."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.tokenize import example_text


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def inspect_file(path: str, fmt: str, model: str, n_examples: int, out: Console) -> dict:
    from trainforge.models import load_tokenizer

    examples = normalize_rows(read_rows(path), fmt, path)
    tokenizer = load_tokenizer(model)
    texts = [example_text(tokenizer, e) for e in examples]
    lengths = sorted(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    stats = {"rows": len(examples), "tokens": sum(lengths), **{f"p{q}": percentile(lengths, q) for q in (50, 90, 99)}, "max": lengths[-1]}
    table = Table("rows", "total tokens", "p50", "p90", "p99", "max", title=f"{path} ({fmt}, {model} tokenizer)")
    table.add_row(*(str(stats[k]) for k in ("rows", "tokens", "p50", "p90", "p99", "max")))
    out.print(table)
    for i, text in enumerate(texts[:n_examples]):
        out.print(Panel(text, title=f"example {i + 1} as the model sees it", expand=False), highlight=False)
    return stats

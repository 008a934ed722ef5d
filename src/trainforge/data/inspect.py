"""`trainforge data inspect`: counts, token-length percentiles and rendered examples of a data file."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.report import DataReport
from trainforge.data.templates import use_template
from trainforge.data.tokenize import IGNORE, Masking, example_text, tokenize_example


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def masked_text(tokenizer, example: dict, masking: Masking) -> tuple[Text, int, int]:
    """An example as the model sees it with its trained tokens highlighted, and (trained, all) token counts."""
    row = tokenize_example(tokenizer, example, 10**9, masking)
    shown = Text()
    for token, label in zip(row["input_ids"], row["labels"]):
        shown.append(tokenizer.decode([token]), style="bold green" if label != IGNORE else "dim")
    return shown, sum(label != IGNORE for label in row["labels"]), len(row["labels"])


def inspect_file(
    path: str,
    fmt: str,
    model: str,
    n_examples: int,
    out: Console,
    show_mask: bool = False,
    template: str = "auto",
    masking: Masking = Masking(),
) -> dict:
    """Rows, token-length percentiles and rendered examples; with `show_mask`, the examples with their trained
    tokens highlighted and the file's trained-token share."""
    from trainforge.models import load_tokenizer

    report = DataReport(source=path)
    examples = normalize_rows(read_rows(path), fmt, path, report=report)
    for line in report.lines():
        out.print(line, highlight=False)
    fmt = report.layout
    tokenizer = use_template(load_tokenizer(model), template)
    if fmt == "preference":
        return inspect_pairs(path, examples, tokenizer, model, n_examples, out)
    texts = [example_text(tokenizer, e) for e in examples]
    lengths = sorted(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    stats = {
        "rows": len(examples),
        "tokens": sum(lengths),
        **{f"p{q}": percentile(lengths, q) for q in (50, 90, 99)},
        "max": lengths[-1],
    }
    table = Table("rows", "total tokens", "p50", "p90", "p99", "max", title=f"{path} ({fmt}, {model} tokenizer)")
    table.add_row(*(str(stats[k]) for k in ("rows", "tokens", "p50", "p90", "p99", "max")))
    out.print(table)
    if show_mask and ("messages" in examples[0] or "segments" in examples[0]):
        counts = [masked_text(tokenizer, e, masking)[1:] for e in examples]
        stats["trained_share"] = round(sum(t for t, _ in counts) / max(sum(n for _, n in counts), 1), 4)
        out.print(f"trained tokens: {stats['trained_share']:.1%} of all tokens (green below; the rest is context)")
        for i, example in enumerate(examples[:n_examples]):
            out.print(
                Panel(
                    masked_text(tokenizer, example, masking)[0], title=f"example {i + 1}: trained tokens", expand=False
                )
            )
        return stats
    for i, text in enumerate(texts[:n_examples]):
        out.print(Panel(text, title=f"example {i + 1} as the model sees it", expand=False), highlight=False)
    return stats


def inspect_pairs(path: str, pairs: list[dict], tokenizer, model: str, n_examples: int, out: Console) -> dict:
    """Preference pairs: token lengths of prompt, chosen and rejected answers, and a few pairs side by side."""
    from rich.columns import Columns

    from trainforge.data.tokenize import render

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompts = [render(tokenizer, p["prompt"], add_generation_prompt=True) for p in pairs]
    answers = {
        side: [count(render(tokenizer, p["prompt"] + p[side])) - count(prompt) for p, prompt in zip(pairs, prompts)]
        for side in ("chosen", "rejected")
    }
    lengths = {"prompt": sorted(count(p) for p in prompts), **{k: sorted(v) for k, v in answers.items()}}
    stats = {
        "rows": len(pairs),
        **{
            f"{part}.{name}": percentile(v, q)
            for part, v in lengths.items()
            for name, q in (("p50", 50), ("p90", 90), ("max", 100))
        },
    }
    table = Table(
        "part", "p50 tokens", "p90", "max", title=f"{path} (preference, {len(pairs)} pairs, {model} tokenizer)"
    )
    for part in lengths:
        table.add_row(part, *(str(stats[f"{part}.{name}"]) for name in ("p50", "p90", "max")))
    out.print(table)
    for i, (pair, prompt) in enumerate(zip(pairs[:n_examples], prompts)):
        out.print(Panel(prompt, title=f"pair {i + 1}: prompt as the model sees it", expand=False), highlight=False)
        out.print(
            Columns(
                [
                    Panel(
                        pair[side][-1]["content"], title=f"[green]{side}[/]" if side == "chosen" else f"[red]{side}[/]"
                    )
                    for side in ("chosen", "rejected")
                ],
                equal=True,
                expand=True,
            ),
            highlight=False,
        )
    return stats

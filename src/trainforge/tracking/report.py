"""A self-contained HTML report per run: summary, before/after table, loss curves, config."""

from __future__ import annotations

import base64
import html
import json
import math

from trainforge.tracking import figures
from trainforge.tracking.rundir import RunDir, atomic_write_text

SAMPLES_SHOWN = 5  # generations from the test split shown in the report (all are in eval_after.json)


def fmt(value) -> str:
    """A number as people read it: floats to 4 significant digits."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def loss_curve_png(metrics: list[dict]) -> bytes | None:
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if not train and not evals:
        return None
    fig, ax = figures.pyplot().subplots(figsize=(7, 3.6), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return figures.png(fig)


def html_table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_image(title: str, png: bytes) -> str:
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto}"
)


def html_page(title: str, parts: list[str]) -> str:
    """One self-contained page: inline style, figures embedded, nothing fetched."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(
    run: RunDir,
    summary: dict,
    comparison: list[list[str]] | None,
    config_yaml: str,
    figures: list[tuple[str, bytes]] | None = None,
    tables: list[tuple[str, list[list], list[str]]] | None = None,
) -> None:
    """`figures` (title, PNG) and `tables` (title, rows, header) add sections; runs that log no losses (tabular
    runs) show those instead of the loss curves."""
    png = loss_curve_png(run.metrics())
    plot = html_image("loss curves", png) if png else "<p>No losses logged.</p>"
    parts = [
        f"<h1>trainforge run {html.escape(run.name)}</h1>",
        "<h2>Summary</h2>",
        html_table([[k, fmt(v)] for k, v in summary.items()], ["key", "value"]),
    ]
    if comparison:
        parts += ["<h2>Before / after</h2>", html_table(comparison, ["metric", "before", "after"])]
    for title, rows, header in [*(tables or []), *_samples(run)]:
        parts += [f"<h2>{html.escape(title)}</h2>", html_table(rows, header)]
    if png or not figures:
        parts += ["<h2>Loss curves</h2>", plot]
    for title, image in figures or []:
        parts += [f"<h2>{html.escape(title)}</h2>", html_image(title, image)]
    parts += ["<h2>Config (the sections this run reads)</h2>", f"<pre>{html.escape(config_yaml)}</pre>"]
    atomic_write_text(run.file("report.html"), html_page(run.name, parts))


def _samples(run: RunDir) -> list[tuple[str, list[list], list[str]]]:
    """The first generations of the trained model on the test split (eval_after.json), as a table."""
    try:
        samples = json.loads(run.file("eval_after.json").read_text(encoding="utf-8")).get("samples") or []
    except (OSError, ValueError):
        return []
    samples = [s for s in samples if isinstance(s, dict)][:SAMPLES_SHOWN]
    if not samples:
        return []
    header = [key for key in samples[0] if isinstance(samples[0][key], (str, int, float, bool))]
    return [("Sample generations (test split)", [[fmt(s.get(k, "")) for k in header] for s in samples], header)]

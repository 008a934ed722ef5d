"""What `runs list / compare` show, as data: the CLI prints it as tables, the web dashboard as HTML."""

from __future__ import annotations

from typing import Any

from trainforge.tracking.rundir import RunDir, read_json

SUMMARY_KEYS = ("method", "model", "steps", "train_loss", "after.exact_match", "after.perplexity", "score")
DAMAGED_SUMMARY = "summary.json is damaged"
FINGERPRINT = "data.fingerprint."  # summary keys of each split's content fingerprint


def summary_of(run: RunDir) -> dict[str, Any]:
    """The run's summary.json ({} while it has none). A damaged one (cut short, not an object) gives only an
    `error` entry: one bad file must not break listing or comparing all the other runs."""
    path = run.file("summary.json")
    if not path.is_file():
        return {}
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        summary = None
    return summary if isinstance(summary, dict) else {"error": DAMAGED_SUMMARY}


def headline(summary: dict) -> str:
    """Tabular and tuning runs: their metric on test (else CV, else the best trial) in one cell."""
    metric = summary.get("metric")
    for key in (f"test.{metric}", f"cv.{metric}.mean", f"best.{metric}", metric):
        if metric and isinstance(summary.get(key), (int, float)):
            return f"{key} {summary[key]:.4g}"
    return ""


def listed_summary(run: RunDir) -> dict[str, Any]:
    """The summary with the `score` headline filled in, as `runs list` shows it."""
    summary = summary_of(run)
    # the score column is what both the CLI table and the dashboard show, so the damage shows there
    summary.setdefault("score", DAMAGED_SUMMARY if summary.get("error") == DAMAGED_SUMMARY else headline(summary))
    return summary


def flat_config(run: RunDir) -> dict[str, Any]:
    from trainforge.config import load_config
    from trainforge.config.applies import flatten

    return flatten(load_config(run.file("config.yaml")).model_dump(mode="json"))


def fingerprints_of(run: RunDir, summary: dict) -> dict[str, str]:
    """Each split's content fingerprint, from run.json's `data` block (data/versioning.py); language-model runs
    made before the block existed kept theirs in summary.json only."""
    recorded = (run.info().get("data") or {}).get("fingerprints")
    return recorded or {k.removeprefix(FINGERPRINT): v for k, v in summary.items() if k.startswith(FINGERPRINT)}


def data_differences(a: dict[str, str], b: dict[str, str]) -> list[list]:
    """[split, a's fingerprint, b's] for each split whose fingerprints differ (None: that side has none)."""
    return [[part, a.get(part), b.get(part)] for part in dict.fromkeys([*a, *b]) if a.get(part) != b.get(part)]


def described_differences(differences: list[list]) -> str:
    """`train (ab12cd34… vs none), ...`."""
    short = lambda value: f"{value[:8]}…" if value else "none"  # noqa: E731
    return ", ".join(f"{part} ({short(a)} vs {short(b)})" for part, a, b in differences)


def compare(a: RunDir, b: RunDir) -> dict:
    """`summary`: [key, a's value, b's value] for every summary key; `config`: the config keys that differ;
    `data`: whether both runs recorded fingerprints (`recorded`) and the splits whose data differ
    (`differences`, as `data_differences`)."""
    sa, sb = summary_of(a), summary_of(b)
    summary = [[key, sa.get(key), sb.get(key)] for key in dict.fromkeys([*sa, *sb])]
    ca, cb = flat_config(a), flat_config(b)
    config = [[key, ca.get(key), cb.get(key)] for key in sorted(set(ca) | set(cb)) if ca.get(key) != cb.get(key)]
    fa, fb = fingerprints_of(a, sa), fingerprints_of(b, sb)
    data = {"recorded": bool(fa and fb), "differences": data_differences(fa, fb)}
    return {"summary": summary, "config": config, "data": data}
